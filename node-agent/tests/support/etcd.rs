//! A real etcd server for the tests (Debian's `etcd-server`), on free
//! loopback ports with a temporary data dir, killed when dropped; a client
//! to write to it; and a TCP relay in front of it that a test can cut, so
//! an agent loses etcd while the test can still write.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, PutOptions};

pub struct Etcd {
    child: Option<Child>,
    pub port: u16,
    peer: u16,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    client: Client,
}

fn etcd_binary() -> &'static str {
    let found = Command::new("etcd").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "etcd is not installed: ./test.sh installs the Debian package etcd-server"
    );
    "etcd"
}

impl Etcd {
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let port = super::free_port();
        let peer = super::free_port();
        let child = Etcd::spawn(&dir, port, peer);
        let client = Etcd::connect(&rt, port);
        Etcd {
            child: Some(child),
            port,
            peer,
            dir,
            rt,
            client,
        }
    }

    fn spawn(dir: &tempfile::TempDir, port: u16, peer: u16) -> Child {
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer}");
        Command::new(etcd_binary())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--name", "t", "--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdout(std::fs::File::create(dir.path().join("etcd.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("etcd.err")).unwrap())
            .spawn()
            .expect("spawn etcd")
    }

    fn connect(rt: &tokio::runtime::Runtime, port: u16) -> Client {
        let t = Instant::now();
        loop {
            let tried = rt.block_on(async {
                let mut c = Client::connect([format!("127.0.0.1:{port}")], None).await?;
                c.status().await?;
                Ok::<_, etcd_client::Error>(c)
            });
            match tried {
                Ok(c) => return c,
                Err(e) => {
                    assert!(t.elapsed() < Duration::from_secs(15), "etcd not up: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    pub fn url(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills etcd (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(Etcd::spawn(&self.dir, self.port, self.peer));
        self.client = Etcd::connect(&self.rt, self.port);
    }

    /// Puts and returns the revision of the put.
    pub fn put(&self, key: &str, value: &str) -> i64 {
        let mut c = self.client.clone();
        let r = self.rt.block_on(c.put(key, value, None)).unwrap();
        r.header().unwrap().revision()
    }

    /// Puts under a new lease of `ttl_s`; returns the lease id.
    pub fn put_leased(&self, key: &str, value: &str, ttl_s: i64) -> i64 {
        let mut c = self.client.clone();
        self.rt.block_on(async {
            let lease = c.lease_grant(ttl_s, None).await.unwrap().id();
            c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                .await
                .unwrap();
            lease
        })
    }

    pub fn del(&self, key: &str) -> i64 {
        let mut c = self.client.clone();
        let r = self.rt.block_on(c.delete(key, None)).unwrap();
        r.header().unwrap().revision()
    }

    /// Every key under `prefix` and the revision read at.
    pub fn get_prefix(&self, prefix: &str) -> (BTreeMap<String, String>, i64) {
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.get(prefix, Some(GetOptions::new().with_prefix())))
            .unwrap();
        let kvs = r
            .kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key_str().unwrap().to_string(),
                    kv.value_str().unwrap().to_string(),
                )
            })
            .collect();
        (kvs, r.header().unwrap().revision())
    }

    /// Compacts the history up to `revision`.
    pub fn compact(&self, revision: i64) {
        let mut c = self.client.clone();
        self.rt.block_on(c.compact(revision, None)).unwrap();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP relay to `target` that can be cut (every open connection shut,
/// new ones closed at once), frozen (connections stay open but nothing
/// passes: a black hole) and restored.
pub struct Relay {
    pub port: u16,
    cut: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    pub fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let frozen = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, s, o, f) = (cut.clone(), stop.clone(), open.clone(), frozen.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((down, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                if c.load(Ordering::Relaxed) {
                    drop(down);
                    continue;
                }
                let _ = down.set_nonblocking(false);
                let Ok(up) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut held = o.lock().unwrap();
                held.push(down.try_clone().unwrap());
                held.push(up.try_clone().unwrap());
                drop(held);
                pump(
                    down.try_clone().unwrap(),
                    up.try_clone().unwrap(),
                    f.clone(),
                );
                pump(up, down, f.clone());
            }
        });
        Relay {
            port,
            cut,
            frozen,
            open,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Nothing passes any more; connections stay open.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.frozen.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, frozen: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                // Frozen: what arrives is swallowed.
                Ok(_) if frozen.load(Ordering::Relaxed) => {}
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
