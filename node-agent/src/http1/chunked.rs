//! A strict, streaming decoder for the chunked transfer coding.
//!
//! The proxy forwards a chunked body as it arrives (the bytes are passed
//! through unchanged), but it must know exactly where the body ends and must
//! refuse anything two parsers could read differently: chunk sizes are 1 to
//! 16 hex digits, extensions are `;name` or `;name=value` with token or
//! quoted-string values, every line ends in CRLF, trailers are header
//! fields. Anything else is a [`Reject`] (400).

use super::Reject;

/// Longest chunk-size line (size + extensions) accepted.
const MAX_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line (bytes so far).
    Size { line: Vec<u8> },
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data (bytes of it seen).
    DataEnd(u8),
    /// Reading trailer lines (current line, total trailer bytes).
    Trailer { line: Vec<u8>, total: usize },
    /// The body has ended.
    Done,
}

/// Streaming chunked-body decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoder {
    state: State,
    /// Payload bytes seen (excluding framing).
    pub payload: u64,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder at the start of a body.
    pub fn new() -> Decoder {
        Decoder {
            state: State::Size { line: Vec::new() },
            payload: 0,
        }
    }

    /// True once the last chunk and the trailers went by.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds body bytes; returns how many belong to the body (the rest, if
    /// any, is the next request). Errors are final.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, Reject> {
        self.feed_with(input, |_| {})
    }

    /// Like [`Decoder::feed`], and calls `data` with each range of `input`
    /// that is chunk payload (for de-chunking), in order.
    pub fn feed_with(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(std::ops::Range<usize>),
    ) -> Result<usize, Reject> {
        let mut i = 0;
        while i < input.len() {
            match &mut self.state {
                State::Done => break,
                State::Data(left) => {
                    let take = (*left).min((input.len() - i) as u64);
                    *left -= take;
                    self.payload += take;
                    data(i..i + take as usize);
                    i += take as usize;
                    if *left == 0 {
                        self.state = State::DataEnd(0);
                    }
                }
                State::DataEnd(seen) => {
                    let want = if *seen == 0 { b'\r' } else { b'\n' };
                    if input[i] != want {
                        return Err(Reject::bad("chunk data not followed by CRLF"));
                    }
                    i += 1;
                    if *seen == 1 {
                        self.state = State::Size { line: Vec::new() };
                    } else {
                        *seen = 1;
                    }
                }
                State::Size { line } => {
                    let b = input[i];
                    i += 1;
                    line.push(b);
                    if line.len() > MAX_LINE {
                        return Err(Reject::bad("chunk-size line too long"));
                    }
                    if b == b'\n' {
                        let size = parse_size_line(line)?;
                        self.state = if size == 0 {
                            State::Trailer {
                                line: Vec::new(),
                                total: 0,
                            }
                        } else {
                            State::Data(size)
                        };
                    }
                }
                State::Trailer { line, total } => {
                    let b = input[i];
                    i += 1;
                    line.push(b);
                    *total += 1;
                    if *total > MAX_TRAILERS {
                        return Err(Reject::bad("trailer section too large"));
                    }
                    if b == b'\n' {
                        if line.as_slice() == b"\r\n" {
                            self.state = State::Done;
                        } else {
                            check_trailer(line)?;
                            line.clear();
                        }
                    }
                }
            }
        }
        Ok(i)
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `1*16HEXDIG *( ";" name [ "=" value ] ) CRLF`. RFC 9112 allows
/// whitespace (BWS) around `;` and `=`; parsers disagree on it, and a body
/// is forwarded as received, so none is accepted (outside a quoted value):
/// `33 \t` never reaches an upstream that might read it differently.
fn parse_size_line(line: &[u8]) -> Result<u64, Reject> {
    let bad = || Reject::bad("malformed chunk size or extension");
    let body = line.strip_suffix(b"\r\n").ok_or_else(bad)?;
    let digits = body.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(bad());
    }
    let text = std::str::from_utf8(&body[..digits]).map_err(|_| bad())?;
    let size = u64::from_str_radix(text, 16).map_err(|_| bad())?;
    let mut rest = &body[digits..];
    loop {
        if rest.is_empty() {
            return Ok(size);
        }
        rest = rest.strip_prefix(b";").ok_or_else(bad)?;
        let name = rest.iter().take_while(|&&b| is_tchar(b)).count();
        if name == 0 {
            return Err(bad());
        }
        rest = &rest[name..];
        if rest.first() == Some(&b'=') {
            rest = &rest[1..];
            if rest.first() == Some(&b'"') {
                let mut j = 1;
                loop {
                    match rest.get(j) {
                        Some(b'"') => break,
                        Some(b'\\')
                            if rest.get(j + 1).is_some_and(|&c| c != b'\r' && c != b'\n') =>
                        {
                            j += 2
                        }
                        Some(&c) if c == b'\t' || (0x20..0x7f).contains(&c) || c >= 0x80 => j += 1,
                        _ => return Err(bad()),
                    }
                }
                rest = &rest[j + 1..];
            } else {
                let v = rest.iter().take_while(|&&b| is_tchar(b)).count();
                if v == 0 {
                    return Err(bad());
                }
                rest = &rest[v..];
            }
        }
    }
}

/// A trailer line must be `name: value CRLF` with a token name.
fn check_trailer(line: &[u8]) -> Result<(), Reject> {
    let bad = || Reject::bad("malformed trailer field");
    let body = line.strip_suffix(b"\r\n").ok_or_else(bad)?;
    let colon = body.iter().position(|&b| b == b':').ok_or_else(bad)?;
    if colon == 0 || !body[..colon].iter().all(|&b| is_tchar(b)) {
        return Err(bad());
    }
    if body[colon + 1..]
        .iter()
        .any(|&b| b == b'\r' || b == b'\n' || b == 0)
    {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(body: &[u8]) -> Result<(usize, u64), Reject> {
        let mut d = Decoder::new();
        let n = d.feed(body)?;
        if !d.done() {
            return Err(Reject::bad("incomplete"));
        }
        Ok((n, d.payload))
    }

    #[test]
    fn valid_bodies() {
        assert_eq!(decode_all(b"5\r\nhello\r\n0\r\n\r\n"), Ok((15, 5)));
        assert_eq!(
            decode_all(b"A;ext;k=v;q=\"a\\\"b\"\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT"),
            Ok((45, 10))
        );
        assert_eq!(decode_all(b"0\r\n\r\n"), Ok((5, 0)));
    }

    #[test]
    fn payload_ranges_de_chunk() {
        let body = b"3;x=\"a b\"\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        for cut in 0..=body.len() {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            let a = d
                .feed_with(&body[..cut], |r| got.extend_from_slice(&body[r]))
                .unwrap();
            let rest = &body[a..];
            d.feed_with(rest, |r| got.extend_from_slice(&rest[r]))
                .unwrap();
            assert!(d.done());
            assert_eq!(got, b"abcde", "cut {cut}");
        }
    }

    #[test]
    fn malformed_bodies() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],             // bare LF after size
            b"x\r\n",                                  // not hex
            b"-5\r\nhello\r\n0\r\n\r\n",               // sign
            b"00000000000000001\r\n",                  // 17 digits
            b"5;\r\nhello\r\n0\r\n\r\n",               // empty extension
            b"5;a=\r\nhello\r\n0\r\n\r\n",             // empty value
            b"5;a=\"x\r\nhello\r\n0\r\n\r\n",          // open quote
            b"5 x\r\nhello\r\n0\r\n\r\n",              // junk after size
            b"5\r\nhelloXX0\r\n\r\n",                  // no CRLF after data
            b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n", // trailer without colon
            b"0x5\r\nhello\r\n0\r\n\r\n",              // 0x prefix
            b"5 \t\r\nhello\r\n0\r\n\r\n",             // trailing whitespace
            b"5 ;a=b\r\nhello\r\n0\r\n\r\n",           // whitespace before ;
            b"5;a = b\r\nhello\r\n0\r\n\r\n",          // whitespace around =
        ] {
            assert!(
                decode_all(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest! {
        /// Any split of a valid body decodes the same as the whole.
        #[test]
        fn splits_do_not_matter(sizes in prop::collection::vec(1usize..300, 0..6), cut in any::<prop::sample::Index>()) {
            let mut body = Vec::new();
            for s in &sizes {
                body.extend_from_slice(format!("{s:x}\r\n").as_bytes());
                body.extend(std::iter::repeat_n(b'z', *s));
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            let cut = cut.index(body.len() + 1);
            let mut d = Decoder::new();
            let a = d.feed(&body[..cut]).unwrap();
            let b = d.feed(&body[a..]).unwrap();
            prop_assert!(d.done());
            prop_assert_eq!(a + b, body.len());
            prop_assert_eq!(d.payload, sizes.iter().sum::<usize>() as u64);
        }

        /// Arbitrary bytes never panic.
        #[test]
        fn arbitrary_input_is_safe(data in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut d = Decoder::new();
            let _ = d.feed(&data);
        }
    }
}
