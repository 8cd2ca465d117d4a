//! A deliberately lenient HTTP/1.1 upstream for the hardening and
//! smuggling tests (included with `#[path]`): it frames requests the way a
//! naive server would (Content-Length if any, else chunked if named, else
//! no body; no vetting at all), logs every request it parses with the
//! bytes it received, and answers each one. A request the agent must never
//! forward shows up in the log, so the tests can fail.
//!
//! Answers depend on the path: the default echoes `METHOD PATH` as the
//! body; `/chunked` answers chunked; `/close` adds `Connection: close` and
//! closes; `/extra` sends a second, unasked-for response right behind the
//! first; `/connhdr` names `X-Secret` in `Connection`; `/drip?ms=M&n=N`
//! sends N chunks M ms apart (a stream); `/h10` answers HTTP/1.0 with a
//! close-delimited body.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the lenient upstream parsed it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `METHOD TARGET`.
    pub line: String,
    /// The head, as received.
    pub head: String,
    /// The body it framed.
    pub body: Vec<u8>,
    /// The upstream connection it came on (accept order).
    pub conn: usize,
}

/// The running upstream; its threads end with the test process.
#[derive(Clone)]
pub struct Lenient {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub conns: Arc<Mutex<usize>>,
}

impl Lenient {
    pub fn start() -> Lenient {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let me = Lenient {
            port,
            seen: Arc::new(Mutex::new(Vec::new())),
            conns: Arc::new(Mutex::new(0)),
        };
        let m = me.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let conn = {
                    let mut c = m.conns.lock().unwrap();
                    *c += 1;
                    *c
                };
                let m = m.clone();
                std::thread::spawn(move || m.serve(s, conn));
            }
        });
        me
    }

    /// Request lines seen so far.
    pub fn lines(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.line.clone())
            .collect()
    }

    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn serve(&self, mut s: TcpStream, conn: usize) {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = Vec::new();
        loop {
            let Some(end) = fill_until(&mut s, &mut buf, |b| find(b, b"\r\n\r\n").map(|i| i + 4))
            else {
                return;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end);
            let line = head.lines().next().unwrap_or("").to_string();
            let mut parts = line.split(' ');
            let method = parts.next().unwrap_or("").to_string();
            let target = parts.next().unwrap_or("").to_string();
            let header = |name: &str| {
                head.lines().skip(1).find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
            };
            let body = if let Some(n) = header("content-length").and_then(|v| v.parse().ok()) {
                let Some(_) = fill_until(&mut s, &mut buf, |b| (b.len() >= n).then_some(n)) else {
                    return;
                };
                buf.drain(..n).collect()
            } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                let Some(n) =
                    fill_until(&mut s, &mut buf, |b| find(b, b"0\r\n\r\n").map(|i| i + 5))
                else {
                    return;
                };
                buf.drain(..n).collect()
            } else {
                Vec::new()
            };
            self.seen.lock().unwrap().push(Seen {
                line: format!("{method} {target}"),
                head: head.clone(),
                body,
                conn,
            });
            if !self.answer(&mut s, &method, &target) {
                return;
            }
        }
    }

    /// Writes the answer; false when the connection ends after it.
    fn answer(&self, s: &mut TcpStream, method: &str, target: &str) -> bool {
        let echo = format!("{method} {target}");
        let path = target.split('?').next().unwrap_or("");
        let plain = |extra: &str| {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{extra}\r\n{echo}",
                echo.len()
            )
        };
        let ok = match path {
            "/chunked" => s.write_all(
                format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{echo}\r\n0\r\n\r\n", echo.len())
                    .as_bytes(),
            ),
            "/close" => {
                let _ = s.write_all(plain("connection: close\r\n").as_bytes());
                return false;
            }
            "/extra" => s.write_all(
                format!("{}HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled", plain("")).as_bytes(),
            ),
            "/connhdr" => s.write_all(plain("connection: x-secret\r\nx-secret: 1\r\nx-kept: 1\r\n").as_bytes()),
            "/101" => s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n"),
            "/ws" => {
                // Switch, then echo raw bytes until the client closes.
                let mut r = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n");
                let mut chunk = [0u8; 4096];
                while r.is_ok() {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => r = s.write_all(&chunk[..n]),
                    }
                }
                return false;
            }
            "/bulk" => {
                // A small send buffer: the bytes wait here, in this test
                // upstream, not in the host's TCP memory.
                let _ = socket2::SockRef::from(&*s).set_send_buffer_size(64 * 1024);
                let n = target
                    .split_once("bytes=")
                    .and_then(|(_, v)| v.parse::<usize>().ok())
                    .unwrap_or(0);
                let mut r = s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n").as_bytes());
                let block = vec![b'x'; 64 * 1024];
                let mut left = n;
                while left > 0 && r.is_ok() {
                    let k = left.min(block.len());
                    r = s.write_all(&block[..k]);
                    left -= k;
                }
                r
            }
            "/h10" => {
                let _ = s.write_all(format!("HTTP/1.0 200 OK\r\n\r\n{echo}").as_bytes());
                return false;
            }
            "/drip" => {
                let q = |k: &str| {
                    target
                        .split(['?', '&'])
                        .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse::<u64>().ok())
                };
                let (ms, n) = (q("ms").unwrap_or(100), q("n").unwrap_or(10));
                let mut r = s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n");
                for i in 0..n {
                    if r.is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(ms));
                    let ev = format!("data: {i}\n\n");
                    r = s.write_all(format!("{:x}\r\n{ev}\r\n", ev.len()).as_bytes());
                }
                r.and_then(|()| s.write_all(b"0\r\n\r\n"))
            }
            _ => s.write_all(plain("").as_bytes()),
        };
        ok.is_ok()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads until `done(buf)` gives a position; None on EOF or error.
fn fill_until(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> Option<usize>,
) -> Option<usize> {
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(n) = done(buf) {
            return Some(n);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
