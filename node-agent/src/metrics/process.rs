//! The agent process's own figures, read from `/proc/self` at scrape time
//! (on the admin thread): CPU seconds, resident memory, open descriptors
//! and their limit.

use super::Expo;

/// Appends `tailmesh_process_*` (left out where `/proc` cannot be read).
pub fn render(o: &mut Expo) {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let page = rustix::param::page_size() as u64;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        && let Some(after) = stat.rsplit_once(") ").map(|(_, rest)| rest)
    {
        // Fields after the command name: state is field 3, utime 14,
        // stime 15, rss 24 (1-based, man 5 proc).
        let f: Vec<&str> = after.split(' ').collect();
        let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
        if let (Some(u), Some(s)) = (num(14), num(15)) {
            o.family(
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time of the agent process.",
            );
            o.value(&[], (u + s) as f64 / ticks);
        }
        if let Some(rss) = num(24) {
            o.family(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory of the agent process.",
            );
            o.value(&[], (rss * page) as f64);
        }
    }
    if let Some(fds) = open_fds() {
        o.family(
            "process_open_fds",
            "gauge",
            "Open file descriptors of the agent process.",
        );
        o.value(&[], fds as f64);
    }
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    if let Some(max) = limit {
        o.family(
            "process_max_fds",
            "gauge",
            "Open file descriptor limit (soft) of the agent process.",
        );
        o.value(&[], max as f64);
    }
}

/// Open descriptors. Linux 6.2 and later report their number as the size
/// of `/proc/self/fd`, which costs one `stat`; older kernels report 0
/// there, and the directory is counted instead. Counting costs a dentry
/// per descriptor: with 1,250 client connections open a scrape took
/// 9-19 ms of CPU that way, on a host whose cores the workers share.
fn open_fds() -> Option<u64> {
    match rustix::fs::stat("/proc/self/fd") {
        Ok(st) if st.st_size > 0 => u64::try_from(st.st_size).ok(),
        _ => std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn open_descriptors_are_counted_as_they_come_and_go() {
        let before = super::open_fds().unwrap();
        let held: Vec<std::fs::File> = (0..40)
            .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
            .collect();
        let during = super::open_fds().unwrap();
        drop(held);
        // Other tests open and close files meanwhile: a margin, not equality.
        assert!(during >= before + 30, "{before} -> {during}");
        assert!(super::open_fds().unwrap() + 30 <= during);
    }

    #[test]
    fn the_process_figures_are_read() {
        let mut e = super::Expo::default();
        super::render(&mut e);
        let o = super::super::expo::encode(&e.into_families());
        for m in [
            "tailmesh_process_cpu_seconds_total ",
            "tailmesh_process_resident_memory_bytes ",
            "tailmesh_process_open_fds ",
        ] {
            let v: f64 = o
                .lines()
                .find_map(|l| l.strip_prefix(m))
                .unwrap_or_else(|| panic!("{m} missing:\n{o}"))
                .parse()
                .unwrap();
            assert!(v > 0.0 || m.contains("cpu"), "{m}{v}");
        }
    }
}
