//! Entry points shared by the cargo-fuzz targets (`node-agent/fuzz`) and the
//! test that replays their corpora under `cargo test`.

use crate::http1::{Limits, chunked, request, rewrite};

/// Parses `data` as a request head (and its chunked body, and the upstream
/// rewrite). Must never panic. Returns the status it would answer with.
pub fn request_head(data: &[u8]) -> u16 {
    let small = Limits {
        max_head: 4096,
        max_request_line: 512,
        max_headers: 32,
    };
    for limits in [Limits::default(), small] {
        let _ = request::parse(data, &limits, &mut request::header_slots());
    }
    let mut slots = request::header_slots();
    let head = match request::parse(data, &Limits::default(), &mut slots) {
        Err(r) => return r.status,
        Ok(None) => return 0,
        Ok(Some(h)) => h,
    };
    let mut out = Vec::new();
    let meta = rewrite::upstream_head(
        &head,
        std::net::Ipv4Addr::LOCALHOST.into(),
        || *b"0123456789abcdef0123456789abcdef",
        &mut out,
    );
    // The rewritten head must itself parse and keep the same framing.
    let mut slots2 = request::header_slots();
    let again = request::parse(
        &out,
        &Limits {
            max_head: usize::MAX / 2,
            max_request_line: usize::MAX / 2,
            max_headers: 1000,
        },
        &mut slots2,
    );
    if let Ok(Some(h2)) = &again {
        assert_eq!(h2.body, head.body, "rewrite changed the body framing");
        assert_eq!(h2.target, head.target);
    }
    let _ = meta.sampling_hash;
    if head.body == request::Body::Chunked {
        return u16::from(chunked_body(&data[head.len..]).is_some()) * 200;
    }
    200
}

/// Decodes `data` as a chunked body, fed in two parts split where the
/// first byte says; both ways must agree. Returns the body length if done.
pub fn chunked_body(data: &[u8]) -> Option<usize> {
    let mut whole = chunked::Decoder::new();
    let r1 = whole.feed(data);
    let split = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let mut parts = chunked::Decoder::new();
    let r2 = parts.feed(&data[..split]).and_then(|a| {
        if a < split {
            return Ok(a); // the body ended inside the first part
        }
        parts.feed(&data[split..]).map(|b| a + b)
    });
    assert_eq!(r1.is_ok(), r2.is_ok(), "split changed the verdict");
    if let (Ok(a), Ok(b)) = (&r1, &r2) {
        assert_eq!(a, b, "split changed the body length");
        assert_eq!(whole.payload, parts.payload);
    }
    r1.ok().filter(|_| whole.done())
}
