//! Child processes for the comparison (upstream, peers, agent), killed when
//! dropped, and their CPU time from `/proc/PID/stat`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A child process that is killed and reaped when dropped.
#[derive(Debug)]
pub struct Proc {
    /// Name for messages.
    pub name: String,
    child: Child,
}

impl Proc {
    /// Spawns `cmd` (stdout piped if `read_first_line`).
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Proc> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// First line the child printed on stdout (needs `Stdio::piped()`).
    pub fn first_line(&mut self) -> Result<String> {
        let out = self
            .child
            .stdout
            .take()
            .with_context(|| format!("{}: stdout not captured", self.name))?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        if line.is_empty() {
            bail!("{} exited before printing its address", self.name);
        }
        Ok(line)
    }

    /// Fails if the child has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited unexpectedly ({status})", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// user + system CPU time of process `pid` (all threads).
pub fn cpu_of(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Ok(Duration::from_secs_f64((utime + stime) as f64 / hz as f64))
}

/// A free loopback port (bound and released; a small race is accepted).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts connections on `port`.
pub fn wait_listening(port: u16, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listening on 127.0.0.1:{port} after {within:?}")
}

/// Fills `{key}` placeholders.
pub fn render(template: &str, vars: &[(&str, String)]) -> String {
    vars.iter().fold(template.to_string(), |t, (k, v)| {
        t.replace(&format!("{{{k}}}"), v)
    })
}

/// Finds an executable on PATH (or common sbin dirs, where Debian puts nginx).
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Starts this binary's `upstream` (one worker) on `listens` loopback
/// ports with `extra` flags; returns it and its addresses, first the
/// primary one.
pub fn start_upstream(
    exe: &std::path::Path,
    listens: usize,
    extra: &[&str],
) -> Result<(Proc, Vec<String>)> {
    let mut cmd = Command::new(exe);
    cmd.arg("upstream");
    for _ in 0..listens {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    let mut up = Proc::spawn(
        "upstream",
        cmd.args(["--workers", "1"])
            .args(extra)
            .stdout(Stdio::piped()),
    )?;
    let line = up.first_line()?;
    let v: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("upstream said {line:?}"))?;
    let addrs: Vec<String> = v["listening"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| Some(v.as_str()?.to_string()))
                .collect()
        })
        .unwrap_or_default();
    if addrs.is_empty() {
        bail!("upstream named no address: {line:?}");
    }
    Ok((up, addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_readable() {
        let t0 = cpu_of(std::process::id()).unwrap();
        let mut x = 0u64;
        let until = Instant::now() + Duration::from_millis(50);
        while Instant::now() < until {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_of(std::process::id()).unwrap() >= t0);
        assert_eq!(
            render("a {x} {y} {x}", &[("x", "1".into()), ("y", "2".into())]),
            "a 1 2 1"
        );
    }
}
