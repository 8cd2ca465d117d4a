//! `ringlog tail [-n N] [-f]`: the newest entries, merged across shards in
//! time order; with -f, new entries as they commit. A recreated file (agent
//! restart) is detected and reopened.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use ringlog::{Follower, RingReader};

use crate::show;

/// Poll interval of follow mode.
const POLL: Duration = Duration::from_millis(100);

pub fn run(path: &Path, json: bool, lines: u64, follow: bool) -> Result<()> {
    let mut reader = RingReader::open(path)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut follower = Follower::from_last(&reader.view(), lines);
    let mut batch = Vec::new();
    let mut first = true;
    loop {
        let view = reader.view();
        let names = view.names();
        batch.clear();
        // When following, read in bounded chunks so output starts promptly.
        while follower.poll(&view, &mut batch, 65_536) > 0 && batch.len() < 1 << 20 {}
        let skip = if first {
            batch.len().saturating_sub(lines as usize)
        } else {
            0
        };
        first = false;
        for e in &batch[skip..] {
            let line = if json {
                show::json(view.header(), &names, e).to_string()
            } else {
                show::text(view.header(), &names, e)
            };
            if writeln!(out, "{line}").is_err() {
                return Ok(()); // stdout closed (e.g. piped into head)
            }
        }
        if out.flush().is_err() || !follow {
            return Ok(());
        }
        std::thread::sleep(POLL);
        if reader.is_replaced() {
            match RingReader::open(path) {
                Ok(r) => {
                    eprintln!(
                        "ringlog: {} was recreated (agent restart); following the new file",
                        path.display()
                    );
                    reader = r;
                    follower = Follower::from_start(&reader.view());
                }
                Err(e) => eprintln!(
                    "ringlog: {} was replaced but cannot be opened yet: {e}",
                    path.display()
                ),
            }
        }
        if follower.lost > 0 {
            eprintln!(
                "ringlog: {} entries were overwritten before they could be printed",
                follower.lost
            );
            follower.lost = 0;
        }
    }
}
