//! Authorization rules over peer identities, sans-IO. A listener's rules
//! say which mTLS identities may reach which routes or ports:
//!
//! 1. a `deny` rule that applies to the target and matches the peer
//!    denies;
//! 2. else, if any `allow` rule applies to the target, the peer must match
//!    one of them;
//! 3. else the request is allowed.
//!
//! A rule applies to a target when its `to.route` (if given) is the route
//! the request took and its `to.port` (if given) is the destination port.
//! A peer without a verified identity matches only `*`.

use crate::tls::spiffe::{IdMatch, SpiffeId};

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let it through.
    Allow,
    /// Refuse it.
    Deny,
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Allow or deny.
    pub action: Action,
    /// Peers it matches (any of them).
    pub from: Vec<IdMatch>,
    /// Route index it is limited to.
    pub route: Option<usize>,
    /// Destination port it is limited to.
    pub port: Option<u16>,
}

impl Rule {
    fn applies(&self, route: Option<usize>, port: u16) -> bool {
        self.route.is_none_or(|r| Some(r) == route) && self.port.is_none_or(|p| p == port)
    }

    fn matches(&self, peer: Option<&SpiffeId>) -> bool {
        self.from.iter().any(|m| m.matches(peer))
    }
}

/// A listener's rules (empty: everyone is allowed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// Rules, in config order (order does not change the outcome).
    pub fn new(rules: Vec<Rule>) -> Policy {
        Policy { rules }
    }

    /// No rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `peer` may reach `route` (None: no route, e.g. an L4
    /// stream or an original destination) on destination `port`.
    pub fn allows(&self, peer: Option<&SpiffeId>, route: Option<usize>, port: u16) -> bool {
        let applicable = || self.rules.iter().filter(|r| r.applies(route, port));
        if applicable().any(|r| r.action == Action::Deny && r.matches(peer)) {
            return false;
        }
        let mut allows = applicable()
            .filter(|r| r.action == Action::Allow)
            .peekable();
        allows.peek().is_none() || allows.any(|r| r.matches(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    fn rule(action: Action, from: &[&str], route: Option<usize>, port: Option<u16>) -> Rule {
        Rule {
            action,
            from: from.iter().map(|f| IdMatch::parse(f).unwrap()).collect(),
            route,
            port,
        }
    }

    #[test]
    fn deny_wins_then_an_applicable_allow_must_match_else_allowed() {
        let web = id("spiffe://td/ns/shop/sa/web");
        let bot = id("spiffe://td/ns/shop/sa/bot");
        let far = id("spiffe://other/ns/x/sa/y");
        let p = Policy::new(vec![
            rule(Action::Allow, &["spiffe://td/*"], Some(1), None),
            rule(Action::Deny, &["spiffe://td/ns/shop/sa/bot"], None, None),
            rule(
                Action::Allow,
                &["spiffe://td/ns/shop/sa/web"],
                None,
                Some(9000),
            ),
        ]);
        // Route 1: the trust domain may, but the bot is denied everywhere.
        assert!(p.allows(Some(&web), Some(1), 80));
        assert!(!p.allows(Some(&bot), Some(1), 80));
        assert!(!p.allows(Some(&far), Some(1), 80));
        assert!(!p.allows(None, Some(1), 80));
        // Port 9000: only web.
        assert!(p.allows(Some(&web), Some(2), 9000));
        assert!(!p.allows(Some(&far), Some(2), 9000));
        // Route 2 on port 80: no allow rule applies, so anyone but the bot.
        assert!(p.allows(Some(&far), Some(2), 80));
        assert!(p.allows(None, None, 80));
        assert!(!p.allows(Some(&bot), None, 80));
        assert!(Policy::default().allows(None, None, 1));
    }
}
