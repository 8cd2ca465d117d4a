//! Routes indexed by host, so matching costs about the same with ten
//! routes or a thousand: a request only tries the routes for its exact
//! host, the `*.suffix` routes whose suffix it ends with, and the routes
//! without a host, merged in config order (first match still wins).

use std::collections::HashMap;

use super::matcher::{HostKey, host_without_port};

/// Longest host looked up in the index (a longer one is lower-cased on
/// the heap; it cannot be a configured host anyway past 255 bytes).
const HOST_MAX: usize = 255;

/// Candidate lists a lookup merges without allocating.
const LISTS: usize = 8;

/// Route positions by host, each list in config order.
#[derive(Debug, Clone, Default)]
pub struct RouteIndex {
    exact: HashMap<Vec<u8>, Vec<usize>>,
    suffix: Vec<(Vec<u8>, Vec<usize>)>,
    any: Vec<usize>,
    /// Number of routes.
    routes: usize,
}

impl RouteIndex {
    /// The index of routes whose host keys are `keys`, in route order.
    pub fn build(keys: impl IntoIterator<Item = HostKey>) -> RouteIndex {
        let mut ix = RouteIndex::default();
        for (pos, key) in keys.into_iter().enumerate() {
            ix.routes = pos + 1;
            match key {
                HostKey::Any => ix.any.push(pos),
                HostKey::Exact(h) => ix.exact.entry(h.into_bytes()).or_default().push(pos),
                HostKey::Suffix(s) => {
                    let s = s.into_bytes();
                    match ix.suffix.iter_mut().find(|(x, _)| *x == s) {
                        Some((_, list)) => list.push(pos),
                        None => ix.suffix.push((s, vec![pos])),
                    }
                }
            }
        }
        ix
    }

    /// The first route position, in order, among the candidates for
    /// `host` (the raw Host value) for which `try_route` is true.
    pub fn first(
        &self,
        host: Option<&[u8]>,
        mut try_route: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        let mut buf = [0u8; HOST_MAX];
        let heap;
        let host: &[u8] = match host.map(|h| host_without_port(h.trim_ascii())) {
            Some(h) if h.len() <= HOST_MAX => {
                let b = &mut buf[..h.len()];
                b.copy_from_slice(h);
                b.make_ascii_lowercase();
                b
            }
            Some(h) => {
                heap = h.to_ascii_lowercase();
                &heap
            }
            None => &[],
        };
        // Candidate lists on the stack (no allocation per request); more
        // matching wildcard suffixes than fit is rare enough to fall back
        // to trying every route in order.
        let mut lists: [&[usize]; LISTS] = [&[]; LISTS];
        lists[0] = &self.any;
        let mut n = 1;
        if !host.is_empty() {
            let exact = self.exact.get(host).map(Vec::as_slice);
            let suffixes = self
                .suffix
                .iter()
                .filter(|(s, _)| host.len() > s.len() && host.ends_with(s))
                .map(|(_, l)| l.as_slice());
            for l in exact.into_iter().chain(suffixes) {
                if n == LISTS {
                    return (0..self.routes).find(|&p| try_route(p));
                }
                lists[n] = l;
                n += 1;
            }
        }
        // Merge the sorted lists, smallest position first.
        let mut at = [0usize; LISTS];
        loop {
            let (k, pos) = lists[..n]
                .iter()
                .zip(&at)
                .enumerate()
                .filter_map(|(k, (l, &i))| l.get(i).map(|&p| (k, p)))
                .min_by_key(|&(_, p)| p)?;
            at[k] += 1;
            if try_route(pos) {
                return Some(pos);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_come_in_config_order() {
        let ix = RouteIndex::build([
            HostKey::Exact("a.svc".into()),
            HostKey::Any,
            HostKey::Suffix(".svc".into()),
            HostKey::Exact("a.svc".into()),
            HostKey::Exact("b.svc".into()),
        ]);
        let all = |host: Option<&[u8]>| {
            let mut seen = Vec::new();
            ix.first(host, |p| {
                seen.push(p);
                false
            });
            seen
        };
        assert_eq!(all(Some(b"A.SVC:80")), [0, 1, 2, 3]);
        assert_eq!(all(Some(b"b.svc")), [1, 2, 4]);
        assert_eq!(all(Some(b"c.other")), [1]);
        assert_eq!(all(None), [1]);
        assert_eq!(ix.first(Some(b"a.svc"), |p| p >= 2), Some(2));
    }

    #[test]
    fn more_matching_wildcards_than_fit_still_go_in_order() {
        // Eight nested suffixes, an exact host and a host-less route: ten
        // candidate lists, past the eight merged on the stack.
        let mut keys = vec![HostKey::Any];
        let mut suffix = String::new();
        for l in 1..=8 {
            suffix = format!(".l{l}{suffix}");
            keys.push(HostKey::Suffix(suffix.clone()));
        }
        let host = format!("h{suffix}");
        keys.push(HostKey::Exact(host.clone()));
        keys.push(HostKey::Exact("other".into()));
        let ix = RouteIndex::build(keys);
        let mut seen = Vec::new();
        let got = ix.first(Some(host.as_bytes()), |p| {
            seen.push(p);
            p == 9
        });
        assert_eq!(got, Some(9));
        assert_eq!(seen, (0..=9).collect::<Vec<_>>());
    }
}
