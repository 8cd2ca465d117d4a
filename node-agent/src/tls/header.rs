//! The mesh transport header: the first bytes a node sends inside a mesh
//! mTLS connection, naming the destination on the far node and how to
//! treat the stream. Sans-IO: bytes in, a header (or "need more") out.
//!
//! ```text
//! 0   4 bytes  magic "TMX1"
//! 4   u16 BE   body length: 8 (IPv4) or 20 (IPv6)
//! 6   u8       protocol: 1 = http, 2 = tcp
//! 7   u8       address family: 4 or 6
//! 8   4 or 16  destination address
//! ..  u16 BE   destination port (not 0)
//! ```
//!
//! Nothing else is accepted: any other magic, length, protocol or family
//! is an error and the connection is closed. The stream's own bytes
//! follow at once (no round trip).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The four bytes every header starts with.
pub const MAGIC: [u8; 4] = *b"TMX1";
/// The longest header (IPv6).
pub const MAX_LEN: usize = 6 + 20;

/// How the far node treats the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamProtocol {
    /// HTTP/1.x: routed per request.
    Http,
    /// Opaque bytes: one L4 tunnel.
    Tcp,
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Destination on the far node.
    pub target: SocketAddr,
    /// Stream protocol.
    pub protocol: StreamProtocol,
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The stream does not start with [`MAGIC`].
    #[error("mesh header: bad magic")]
    Magic,
    /// The body length fits no address family.
    #[error("mesh header: bad length {0}")]
    Length(u16),
    /// Unknown protocol byte.
    #[error("mesh header: unknown protocol {0}")]
    Protocol(u8),
    /// Address family other than 4 or 6, or one that disagrees with the
    /// length.
    #[error("mesh header: bad address family {0}")]
    Family(u8),
    /// Port 0.
    #[error("mesh header: port 0")]
    Port,
}

impl Header {
    /// The header's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(MAX_LEN);
        v.extend_from_slice(&MAGIC);
        let (family, addr): (u8, Vec<u8>) = match self.target.ip() {
            IpAddr::V4(a) => (4, a.octets().to_vec()),
            IpAddr::V6(a) => (6, a.octets().to_vec()),
        };
        let len = 2 + addr.len() + 2;
        v.extend_from_slice(&(len as u16).to_be_bytes());
        v.push(match self.protocol {
            StreamProtocol::Http => 1,
            StreamProtocol::Tcp => 2,
        });
        v.push(family);
        v.extend_from_slice(&addr);
        v.extend_from_slice(&self.target.port().to_be_bytes());
        v
    }

    /// Decodes a header at the start of `buf`: `Ok(None)` until it is all
    /// there, then the header and how many bytes it took. Bytes that
    /// already prove it bad are refused before the rest arrives.
    pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, HeaderError> {
        let have = buf.len().min(MAGIC.len());
        if buf.get(..have) != MAGIC.get(..have) {
            return Err(HeaderError::Magic);
        }
        let Some(&[hi, lo]) = buf.get(4..6) else {
            return Ok(None);
        };
        let len = u16::from_be_bytes([hi, lo]);
        let want_family = match len {
            8 => 4,
            20 => 6,
            _ => return Err(HeaderError::Length(len)),
        };
        if let Some(&p) = buf.get(6)
            && !matches!(p, 1 | 2)
        {
            return Err(HeaderError::Protocol(p));
        }
        if let Some(&f) = buf.get(7)
            && f != want_family
        {
            return Err(HeaderError::Family(f));
        }
        let total = 6 + usize::from(len);
        let Some(body) = buf.get(6..total) else {
            return Ok(None);
        };
        let protocol = if body[0] == 1 {
            StreamProtocol::Http
        } else {
            StreamProtocol::Tcp
        };
        let addr = &body[2..body.len() - 2];
        let ip = match <[u8; 4]>::try_from(addr) {
            Ok(a) => IpAddr::V4(Ipv4Addr::from(a)),
            Err(_) => match <[u8; 16]>::try_from(addr) {
                Ok(a) => IpAddr::V6(Ipv6Addr::from(a)),
                Err(_) => return Err(HeaderError::Length(len)),
            },
        };
        let port = u16::from_be_bytes([body[body.len() - 2], body[body.len() - 1]]);
        if port == 0 {
            return Err(HeaderError::Port);
        }
        Ok(Some((
            Header {
                target: SocketAddr::new(ip, port),
                protocol,
            },
            total,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_byte_by_byte() {
        for (addr, protocol) in [
            ("10.1.2.3:8080", StreamProtocol::Http),
            ("[fd00::7]:443", StreamProtocol::Tcp),
        ] {
            let h = Header {
                target: addr.parse().unwrap(),
                protocol,
            };
            let mut bytes = h.encode();
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let n = h.encode().len();
            for k in 0..n {
                assert_eq!(Header::parse(&bytes[..k]), Ok(None), "{k}");
            }
            assert_eq!(Header::parse(&bytes), Ok(Some((h, n))));
        }
    }

    #[test]
    fn bad_headers_are_refused_as_soon_as_a_byte_proves_it() {
        assert_eq!(Header::parse(b"GET "), Err(HeaderError::Magic));
        assert_eq!(Header::parse(b"TMX2"), Err(HeaderError::Magic));
        assert_eq!(Header::parse(b"TMX1\x00\x09"), Err(HeaderError::Length(9)));
        assert_eq!(
            Header::parse(b"TMX1\x00\x08\x03"),
            Err(HeaderError::Protocol(3))
        );
        assert_eq!(
            Header::parse(b"TMX1\x00\x08\x01\x06"),
            Err(HeaderError::Family(6))
        );
        assert_eq!(
            Header::parse(b"TMX1\x00\x08\x01\x04\x7f\x00\x00\x01\x00\x00"),
            Err(HeaderError::Port)
        );
    }
}
