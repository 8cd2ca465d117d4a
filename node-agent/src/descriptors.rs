//! Sizing the process's descriptor table once, before the workers start.
//!
//! Linux keeps a process's open files in a table that starts at 64 slots
//! and doubles whenever a new descriptor does not fit. In a process with
//! more than one thread every doubling waits for an RCU grace period
//! (`expand_fdtable` calls `synchronize_rcu`), and the thread whose
//! `accept` or `socket` needed the room waits with it. A worker hit by a
//! burst of new connections (an attack, a reconnect storm after a deploy)
//! stops serving everyone for every doubling on its way from 64 to a few
//! thousand slots: on a 2-core VM each wait measured 8-20 ms, and a burst
//! of 1,300 connections cost the legitimate load ~70 ms of silence
//! (`perf sched` showed the worker in `expand_files` ← `io_accept`).
//!
//! [`prealloc`] grows the table in one step at start, by placing a
//! descriptor at the last slot wanted and closing it again; tables never
//! shrink, so the room stays. The kernel spends 8 bytes (plus two bits) per
//! slot: 64 KiB for 8,192 slots, 8 MiB for 1,048,576. The agent asks for
//! room for its connection limit twice over (each client connection may
//! hold an upstream one), within the open-file limit and [`MAX_SLOTS`].

use rustix::io::Errno;

/// The largest table [`prealloc`] asks for: the kernel's default
/// `fs.nr_open`, and 8 MiB of kernel memory.
pub const MAX_SLOTS: u64 = 1 << 20;

/// Below this the table is small enough that growing it costs little,
/// and the kernel's first table already has 64 slots.
const SMALL: u64 = 256;

/// Why the table could not be grown (the agent still runs; the kernel
/// grows the table on demand as before).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorError {
    /// The pipe that lends a descriptor to duplicate could not be made.
    #[error("making a pipe to size the descriptor table: {0}")]
    Pipe(#[source] Errno),
    /// Placing a descriptor at the last slot failed.
    #[error("placing a descriptor at slot {slot}: {source}")]
    Place {
        /// The slot asked for.
        slot: u64,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
}

/// The slots to ask for: room for `connections` client connections and
/// as many upstream ones, plus [`SMALL`] for listeners, the ring, the
/// admin server and pooled connections, within the soft open-file limit
/// `soft` (a descriptor past it cannot be opened anyway) and
/// [`MAX_SLOTS`].
pub fn wanted(connections: u64, soft: Option<u64>) -> u64 {
    connections
        .saturating_mul(2)
        .saturating_add(SMALL)
        .min(soft.unwrap_or(u64::MAX))
        .min(MAX_SLOTS)
}

/// Grows the descriptor table to hold at least `slots` descriptors
/// (slots `0..slots`). Returns the slots asked for, or 0 when `slots` is
/// small enough that nothing was done. The descriptors it opens are
/// closed again before it returns.
pub fn prealloc(slots: u64) -> Result<u64, DescriptorError> {
    if slots <= SMALL {
        return Ok(0);
    }
    let (read, _write) = rustix::pipe::pipe().map_err(DescriptorError::Pipe)?;
    let last = slots - 1;
    // F_DUPFD takes an int; MAX_SLOTS keeps `last` well inside it.
    let min = i32::try_from(last).map_err(|_| DescriptorError::Place {
        slot: last,
        source: Errno::INVAL,
    })?;
    let placed = rustix::io::fcntl_dupfd_cloexec(&read, min)
        .map_err(|source| DescriptorError::Place { slot: last, source })?;
    drop(placed);
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `FDSize` in /proc/self/status: the table's current size.
    fn table_size() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn the_table_is_grown_at_once_and_keeps_its_room() {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let want = wanted(1500, soft);
        assert_eq!(prealloc(want).unwrap(), if want > SMALL { want } else { 0 });
        assert!(table_size() >= want, "FDSize {} < {want}", table_size());
        // The descriptor placed there was closed again.
        assert!(!std::path::Path::new(&format!("/proc/self/fd/{}", want - 1)).exists());
    }

    #[test]
    fn wanted_stays_within_the_open_file_limit_and_the_cap() {
        assert_eq!(wanted(1000, Some(8192)), 2256);
        assert_eq!(wanted(7168, Some(8192)), 8192);
        assert_eq!(wanted(u64::MAX, None), MAX_SLOTS);
        assert_eq!(wanted(10, Some(1024)), 276);
        assert_eq!(prealloc(SMALL).unwrap(), 0);
    }
}
