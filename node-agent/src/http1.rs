//! Sans-IO HTTP/1.1 for the proxy: parse and vet a request head, decode
//! chunked bodies as they stream, build the head sent upstream, vet the
//! upstream's response head (malformed: 502) and build the head sent
//! downstream, and make the agent's own responses (`x-tailmesh-reason`).
//!
//! Nothing here touches a socket or a clock. Every rejection carries the
//! status to answer with and a [`Reason`] code, which becomes the
//! `x-tailmesh-reason` header and the trace record's reason. Whenever the
//! framing of a request cannot be trusted, the answer closes the downstream
//! connection and nothing of the request reaches an upstream.
//!
//! | case | answer |
//! |---|---|
//! | Content-Length together with Transfer-Encoding | 400 |
//! | duplicate differing Content-Length | 400 |
//! | Transfer-Encoding other than a final `chunked` | 400 |
//! | malformed chunk size or extension | 400 |
//! | obs-fold, whitespace before the colon, invalid name bytes | 400 |
//! | bare CR, or a bare LF line ending | 400 |
//! | head over 64 KiB (configurable) | 431 |
//! | request line over 8 KiB (configurable) | 414 |

pub mod chunked;
pub mod edit;
pub mod request;
pub mod response;
pub mod rewrite;

use ringlog::Reason;

/// Most header fields a request or response head may carry.
pub const MAX_HEADERS: usize = 100;

/// Storage for the fields of one parsed head, provided by the caller so a
/// parse neither initialises nor moves 100 fields (3.2 KB) per request.
pub type HeaderSlots<'b> = [std::mem::MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

/// Empty [`HeaderSlots`].
pub fn header_slots<'b>() -> HeaderSlots<'b> {
    [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Writes `v` as 16 lowercase hex digits into `out[..16]`.
pub(crate) fn hex16(v: u64, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().take(16).enumerate() {
        *b = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// Appends `v` in decimal (the hot path avoids `core::fmt`).
pub(crate) fn write_u64(mut v: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends an address as `Display` would: IPv4 by hand, IPv6 through `fmt`.
pub(crate) fn write_ip(ip: std::net::IpAddr, out: &mut Vec<u8>) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_u64(u64::from(o), out);
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends `addr` as a Host value: `ip:port`, IPv6 in brackets.
pub(crate) fn write_addr(addr: std::net::SocketAddr, out: &mut Vec<u8>) {
    if addr.is_ipv6() {
        out.push(b'[');
        write_ip(addr.ip(), out);
        out.push(b']');
    } else {
        write_ip(addr.ip(), out);
    }
    out.push(b':');
    write_u64(u64::from(addr.port()), out);
}

/// A Content-Length value: `1*DIGIT` only (no sign, spaces inside, or list),
/// at most 19 digits so it fits in u64. Requests and responses share this
/// rule so both sides frame bodies identically.
pub(crate) fn content_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The comma-separated, trimmed, non-empty tokens of a list header.
pub(crate) fn token_list(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Size limits for request heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line + headers + blank line).
    pub max_head: usize,
    /// Longest request line.
    pub max_request_line: usize,
    /// Most header fields.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head: 64 * 1024,
            max_request_line: 8 * 1024,
            max_headers: MAX_HEADERS,
        }
    }
}

/// Why a request was refused: the status to answer, the reason code, and a
/// short human explanation (sent as the response body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {}: {detail}", reason.name())]
#[non_exhaustive]
pub struct Reject {
    /// HTTP status to answer with.
    pub status: u16,
    /// Reason code (`x-tailmesh-reason`, trace record).
    pub reason: Reason,
    /// What exactly was wrong.
    pub detail: &'static str,
}

impl Reject {
    pub(crate) fn bad(detail: &'static str) -> Reject {
        Reject {
            status: 400,
            reason: Reason::BadRequest,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hand_formatting_matches_display() {
        for v in [0u64, 7, 10, 99, 100, 65535, u64::MAX] {
            let mut out = Vec::new();
            super::write_u64(v, &mut out);
            assert_eq!(out, v.to_string().into_bytes());
            let mut hex = [0u8; 16];
            super::hex16(v, &mut hex);
            assert_eq!(hex.to_vec(), format!("{v:016x}").into_bytes());
        }
        for ip in ["0.0.0.0", "10.1.2.3", "255.255.255.255", "::1", "fe80::1:2"] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            super::write_ip(ip, &mut out);
            assert_eq!(out, ip.to_string().into_bytes());
        }
    }
}
