//! `ringlog tail [-n N] [-f] [SELECT]`: the newest entries, merged across
//! shards in time order, records and events on one timeline; with -f, new
//! entries as they commit. A recreated file (agent restart) is detected and
//! reopened. `--where` filters records; `--since/--until` both. Colour
//! (errors red, events yellow) only on a terminal and without NO_COLOR.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use ringlog::{Follower, RingReader};

use crate::select::{Select, Selection};
use crate::show;

/// ANSI colour for an entry's line, if any.
fn colour(e: &ringlog::Entry) -> Option<&'static str> {
    match &e.item {
        ringlog::Item::Event(_) => Some("\x1b[33m"),
        ringlog::Item::Record(r) if r.status >= 500 || r.flags.has(ringlog::Flags::ERROR) => {
            Some("\x1b[31m")
        }
        ringlog::Item::Record(_) => None,
    }
}

/// Poll interval of follow mode.
const POLL: Duration = Duration::from_millis(100);

/// Most entries `-n` prints; the first batch holds up to this many per
/// shard in memory. `export` streams any number.
pub const MAX_LINES: u64 = 100_000;

pub fn run(path: &Path, json: bool, lines: u64, follow: bool, select: &Select) -> Result<()> {
    let mut reader = RingReader::open(path)?;
    if lines > MAX_LINES {
        eprintln!(
            "ringlog: tail -n {lines}: printing the newest {MAX_LINES} (use `ringlog export` for more)"
        );
    }
    let lines = lines.min(MAX_LINES);
    // Times resolve once (a relative --since does not slide while
    // following); the filter re-resolves as the name table grows.
    let base = select.resolve(&reader.view(), &reader.view().names())?;
    let color = !json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    // Start far enough back that each shard has `lines` selected entries
    // ahead (with no selection, simply its last `lines` slots).
    let mut follower = Follower::from_last_matching(&reader.view(), lines, |e| base.keep_entry(e));
    let mut batch = Vec::new();
    let mut first = true;
    loop {
        let view = reader.view();
        let names = view.names();
        let sel = Selection {
            filter: select.filter(&names)?,
            ..base.clone()
        };
        batch.clear();
        // Read in chunks and keep only the selected entries; when following,
        // stop at a bounded batch so output starts promptly.
        while follower.poll_where(&view, &mut batch, 65_536, |e| sel.keep_entry(e)) > 0
            && (first || batch.len() < 1 << 20)
        {}
        let skip = if first {
            // Chunks merge by time within themselves; put the whole first
            // batch in order before taking its newest `lines`.
            batch.sort_by_key(|e| (e.item.time_key(), e.shard));
            batch.len().saturating_sub(lines as usize)
        } else {
            0
        };
        first = false;
        for e in &batch[skip..] {
            let mut line = if json {
                show::json(view.header(), &names, e).to_string()
            } else {
                show::text(view.header(), &names, e)
            };
            if color && let Some(c) = colour(e) {
                line = format!("{c}{line}\x1b[0m");
            }
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
