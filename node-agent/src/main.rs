//! `node-agent` binary. The data path is not built yet (issue #4): the
//! binary says so and exits with status 2 instead of pretending to serve.

fn main() {
    eprintln!("node-agent: the data path is not implemented yet (tracked in issue #4)");
    std::process::exit(2);
}
