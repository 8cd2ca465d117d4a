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

fn selected(sel: &Selection, e: &ringlog::Entry) -> bool {
    match &e.item {
        ringlog::Item::Record(r) => sel.keep(r, e.shard),
        ringlog::Item::Event(x) => x.time_ns >= sel.from && x.time_ns < sel.to,
    }
}

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

pub fn run(path: &Path, json: bool, lines: u64, follow: bool, select: &Select) -> Result<()> {
    let mut reader = RingReader::open(path)?;
    // Times resolve once (a relative --since does not slide while
    // following); the filter re-resolves as the name table grows.
    let base = select.resolve(&reader.view(), &reader.view().names())?;
    let color = !json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
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
        let sel = Selection {
            filter: select.filter(&names)?,
            ..base.clone()
        };
        batch.retain(|e| selected(&sel, e));
        let skip = if first {
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
