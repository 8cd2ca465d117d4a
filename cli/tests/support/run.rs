//! Running the `ringlog` binary from the CLI's integration tests.

use std::process::Command;

/// Runs `ringlog ARGS --ring RING`, which must succeed; its stdout.
pub fn ringlog(args: &[&str], ring: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(args)
        .arg("--ring")
        .arg(ring)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
