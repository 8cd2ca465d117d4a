//! Protocol sniffing for `protocol: auto` listeners: an HTTP/1.x request
//! line (a method token, a space) means HTTP; anything else is L4 TCP.

/// Longest method token considered.
const MAX_METHOD: usize = 16;

/// What the first bytes of a connection look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// An HTTP/1.x request line begins.
    Http,
    /// Not HTTP/1.x: treat as opaque TCP.
    Tcp,
    /// Too few bytes to tell.
    NeedMore,
}

/// Classifies the first bytes a client sent.
pub fn sniff(first: &[u8]) -> Sniffed {
    for (i, &b) in first.iter().enumerate().take(MAX_METHOD + 1) {
        match b {
            b'A'..=b'Z' | b'-' | b'_' => {}
            b' ' if i > 0 => return Sniffed::Http,
            _ => return Sniffed::Tcp,
        }
    }
    if first.len() > MAX_METHOD {
        Sniffed::Tcp
    } else {
        Sniffed::NeedMore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_and_others() {
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Sniffed::Http);
        assert_eq!(sniff(b"M-SEARCH * HTTP/1.1"), Sniffed::Http);
        assert_eq!(sniff(b"POS"), Sniffed::NeedMore);
        assert_eq!(sniff(b""), Sniffed::NeedMore);
        assert_eq!(sniff(b"\x16\x03\x01\x02\x00"), Sniffed::Tcp);
        assert_eq!(sniff(b"SSH-2.0-OpenSSH"), Sniffed::Tcp);
        assert_eq!(sniff(b" GET"), Sniffed::Tcp);
        assert_eq!(sniff(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ "), Sniffed::Tcp);
    }
}
