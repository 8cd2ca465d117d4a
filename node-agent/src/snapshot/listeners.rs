//! Stable listener slots across generations. Sessions and the per-listener
//! connection counters name their listener by its index in the snapshot,
//! and workers accept per index; so a listener keeps its index for as
//! long as it exists, whatever the new config's order. A listener the new
//! config drops stays as a retired entry while connections it accepted
//! are open (workers close them once idle), so those sessions still find
//! their timeouts and default route. A new listener takes a retired slot
//! that no connection uses any more, else a new one, up to
//! [`MAX_LISTENERS`].

use super::{ListenerRt, Snapshot};

/// Listener slots an agent can have (active and retired together).
pub const MAX_LISTENERS: usize = 64;

impl Snapshot {
    /// Puts this (new) snapshot's listeners in `prev`'s slots: same name,
    /// same slot. `open(i)` is the number of connections open on slot `i`.
    /// Fails past [`MAX_LISTENERS`] slots.
    pub fn place_listeners(
        &mut self,
        prev: &Snapshot,
        open: impl Fn(usize) -> u64,
    ) -> Result<(), String> {
        let mut slots: Vec<Option<ListenerRt>> = vec![None; prev.listeners.len()];
        let mut fresh = Vec::new();
        for l in std::mem::take(&mut self.listeners) {
            match prev
                .listeners
                .iter()
                .position(|p| p.retired.is_none() && p.name == l.name)
            {
                Some(i) => slots[i] = Some(l),
                None => fresh.push(l),
            }
        }
        // A retired slot stays retired while it has connections, or if it
        // retired in the previous generation (a worker may not have closed
        // its socket yet); else it is free.
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let p = &prev.listeners[i];
            let since = p.retired.unwrap_or(self.generation);
            if open(i) > 0 || since + 1 >= self.generation {
                let mut r = p.clone();
                r.retired = Some(since);
                r.default_route = self.default_route_of(prev, &p.name);
                *slot = Some(r);
            }
        }
        for l in fresh {
            match slots.iter().position(Option::is_none) {
                Some(i) => slots[i] = Some(l),
                None => slots.push(Some(l)),
            }
        }
        // Holes left after the last active listener are dropped; others
        // become free retired entries.
        while slots.last().is_some_and(Option::is_none) {
            slots.pop();
        }
        if slots.len() > MAX_LISTENERS {
            return Err(format!(
                "listeners: {} slots needed (active + retired with open connections), at most {MAX_LISTENERS}",
                slots.len()
            ));
        }
        self.listeners = slots
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                s.unwrap_or_else(|| {
                    let mut r = prev.listeners[i].clone();
                    r.retired = Some(r.retired.unwrap_or(self.generation));
                    r.default_route = None;
                    r
                })
            })
            .collect();
        Ok(())
    }

    /// The default route (in this snapshot) that `prev`'s listener `name`
    /// had, if that route still exists.
    fn default_route_of(&self, prev: &Snapshot, name: &str) -> Option<usize> {
        let route = prev
            .config
            .listeners
            .iter()
            .find(|l| l.name == name)?
            .default_route
            .as_ref()?;
        self.routes.iter().position(|r| &r.name == route)
    }

    /// Whether any listener is retired (workers then close its idle
    /// connections each turn).
    pub fn has_retired_listeners(&self) -> bool {
        self.listeners.iter().any(|l| l.retired.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(listeners: &[(&str, u16)], generation: u32) -> Snapshot {
        let ls: Vec<String> = listeners
            .iter()
            .map(|(n, p)| {
                format!(r#"  - {{ name: {n}, bind: "127.0.0.1:{p}", protocol: http, default_route: r }}"#)
            })
            .collect();
        let text = format!(
            "version: 1\nlisteners:\n{}\nclusters: [ {{ name: c, endpoints: [ {{ addr: \"127.0.0.1:1\" }} ] }} ]\nroutes: [ {{ name: r, to: [ {{ cluster: c }} ] }} ]\n",
            ls.join("\n")
        );
        let cfg = crate::config::parse(&text, false).unwrap();
        Snapshot::build(cfg, generation, |_, _| Ok(1)).unwrap()
    }

    fn names(s: &Snapshot) -> Vec<(String, bool)> {
        s.listeners
            .iter()
            .map(|l| (l.name.clone(), l.retired.is_some()))
            .collect()
    }

    #[test]
    fn listeners_keep_their_slots_and_removed_ones_retire_until_idle() {
        let one = snap(&[("a", 1), ("b", 2), ("c", 3)], 1);
        // b removed, d added, order shuffled.
        let mut two = snap(&[("d", 4), ("c", 3), ("a", 1)], 2);
        two.place_listeners(&one, |i| u64::from(i == 1)).unwrap();
        let want = |v: &[(&str, bool)]| -> Vec<(String, bool)> {
            v.iter().map(|(n, r)| (n.to_string(), *r)).collect()
        };
        assert_eq!(
            names(&two),
            want(&[("a", false), ("b", true), ("c", false), ("d", false)])
        );
        assert_eq!(two.listeners[1].default_route, Some(0), "b still routes");
        // b still has a connection: it stays; once idle (and a generation
        // later) its slot is taken by a new listener.
        let mut three = snap(&[("a", 1), ("c", 3), ("d", 4), ("e", 5)], 3);
        three.place_listeners(&two, |i| u64::from(i == 1)).unwrap();
        assert_eq!(names(&three)[1], ("b".to_string(), true));
        assert_eq!(three.listeners.len(), 5);
        let mut four = snap(&[("a", 1), ("c", 3), ("d", 4), ("e", 5), ("f", 6)], 4);
        four.place_listeners(&three, |_| 0).unwrap();
        assert_eq!(names(&four)[1], ("f".to_string(), false));
        assert!(!four.has_retired_listeners());
    }

    #[test]
    fn a_listener_retired_just_now_is_not_reused_even_when_idle() {
        let one = snap(&[("a", 1), ("b", 2)], 1);
        let mut two = snap(&[("a", 1), ("c", 3)], 2);
        two.place_listeners(&one, |_| 0).unwrap();
        assert_eq!(
            names(&two),
            [("a".into(), false), ("b".into(), true), ("c".into(), false)]
        );
    }
}
