//! A route's header edits and path prefix rewrite, compiled once per
//! snapshot: which fields a head loses, which it gains, and the new path.
//! What a route may name is checked with the config
//! ([`check_field_name`], [`check_field_value`]); framing and hop-by-hop
//! fields are never edited, so an edit cannot desync a connection.

use crate::config::schema::HeaderActions;

/// Fields no route may add, set or remove: they frame the message or
/// describe one hop, and the agent writes them itself.
pub const FORBIDDEN: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Why a field name or value cannot be used.
pub fn check_field_name(name: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("{name:?} is not a header field name"));
    }
    if FORBIDDEN.iter().any(|f| f.eq_ignore_ascii_case(name)) {
        return Err(format!(
            "{name:?} frames the message or describes one hop; the agent writes it itself"
        ));
    }
    Ok(())
}

/// Why a field value cannot be used (control bytes other than tab, CR,
/// LF, DEL, or leading / trailing whitespace).
pub fn check_field_value(v: &str) -> Result<(), String> {
    if v.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
        return Err(format!("{v:?} holds a control byte"));
    }
    if v.trim() != v {
        return Err(format!("{v:?} starts or ends with whitespace"));
    }
    Ok(())
}

/// Edits of one head (request or response).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdit {
    /// Lowercase names of fields dropped (removed, and set ones).
    remove: Vec<String>,
    /// `name: value` lines appended (added, and set ones), CRLF-ended.
    add: Vec<u8>,
}

impl HeaderEdit {
    fn new<'a>(
        add: impl IntoIterator<Item = (&'a String, &'a String)>,
        set: impl IntoIterator<Item = (&'a String, &'a String)> + Clone,
        remove: &[String],
    ) -> HeaderEdit {
        let mut e = HeaderEdit::default();
        for n in remove.iter().chain(set.clone().into_iter().map(|(n, _)| n)) {
            e.remove.push(n.to_ascii_lowercase());
        }
        for (n, v) in add.into_iter().chain(set) {
            e.add.extend_from_slice(n.as_bytes());
            e.add.extend_from_slice(b": ");
            e.add.extend_from_slice(v.as_bytes());
            e.add.extend_from_slice(b"\r\n");
        }
        e
    }

    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }

    /// The head loses fields named `name`.
    pub fn removes(&self, name: &str) -> bool {
        self.remove.iter().any(|r| r.eq_ignore_ascii_case(name))
    }

    /// Appends the added fields to a head being written.
    pub fn write_added(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.add);
    }
}

/// A route's edits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteEdits {
    /// Of the request head.
    pub request: HeaderEdit,
    /// Of the response head.
    pub response: HeaderEdit,
    /// (matched prefix, replacement) of the request path.
    pub prefix: Option<(String, String)>,
}

impl RouteEdits {
    /// The edits of a route with these header actions, path prefix and
    /// prefix rewrite; None when there is nothing to do.
    pub fn build(
        actions: Option<&HeaderActions>,
        path_prefix: Option<&str>,
        rewrite: Option<&str>,
    ) -> Option<RouteEdits> {
        let mut e = RouteEdits::default();
        if let Some(a) = actions {
            e.request = HeaderEdit::new(&a.request_add, &a.request_set, &a.request_remove);
            e.response = HeaderEdit::new(&a.response_add, &a.response_set, &a.response_remove);
        }
        if let (Some(from), Some(to)) = (path_prefix, rewrite) {
            e.prefix = Some((from.to_string(), to.to_string()));
        }
        (e != RouteEdits::default()).then_some(e)
    }

    /// Writes `target` with the prefix rewritten (as is when it does not
    /// start with the prefix).
    pub fn write_target(&self, target: &str, out: &mut Vec<u8>) {
        match &self.prefix {
            Some((from, to)) if let Some(rest) = target.strip_prefix(from.as_str()) => {
                out.extend_from_slice(to.as_bytes());
                out.extend_from_slice(rest.as_bytes());
            }
            _ => out.extend_from_slice(target.as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_compile_and_apply() {
        let a = HeaderActions {
            request_add: [("x-env".to_string(), "prod".to_string())].into(),
            request_set: [("X-Tenant".to_string(), "t1".to_string())].into(),
            request_remove: vec!["X-Debug".into()],
            response_remove: vec!["server".into()],
            ..HeaderActions::default()
        };
        let e = RouteEdits::build(Some(&a), Some("/api/"), Some("/v2/")).unwrap();
        assert!(e.request.removes("x-debug") && e.request.removes("x-tenant"));
        assert!(!e.request.removes("x-env"));
        let mut out = Vec::new();
        e.request.write_added(&mut out);
        assert_eq!(out, b"x-env: prod\r\nX-Tenant: t1\r\n");
        assert!(e.response.removes("Server") && !e.response.is_empty());
        let mut t = Vec::new();
        e.write_target("/api/users?x=1", &mut t);
        assert_eq!(t, b"/v2/users?x=1");
        t.clear();
        e.write_target("/other", &mut t);
        assert_eq!(t, b"/other");
        assert_eq!(RouteEdits::build(None, Some("/"), None), None);
    }

    #[test]
    fn framing_and_hop_fields_and_bad_bytes_are_refused() {
        for n in [
            "Content-Length",
            "transfer-encoding",
            "Connection",
            "upgrade",
            "te",
        ] {
            assert!(check_field_name(n).is_err(), "{n}");
        }
        assert!(check_field_name("x ok").is_err());
        assert!(check_field_name("").is_err());
        assert!(check_field_name("x-env").is_ok());
        assert!(check_field_value("a\r\nb: c").is_err());
        assert!(check_field_value(" pad").is_err());
        assert!(check_field_value("a\tb").is_ok());
    }
}
