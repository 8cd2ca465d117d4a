//! `ringlog report` on a scenario ring with a known slow endpoint, checked
//! as a file (self-contained, the right sections) and as a page rendered by
//! headless Chromium (no console message, plot and tables drawn, screenshot
//! not blank). test.sh installs Debian's `chromium`; without it this fails.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::{Path, PathBuf};
use std::process::Command;

use ringlog::RingWriter;
use ringlog::scenario::{Culprit, Scenario};

const BIN: &str = env!("CARGO_BIN_EXE_ringlog");

fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("chromium is not installed (test.sh installs Debian's chromium)")
}

/// Runs headless Chromium on `page` with `extra` args; returns stderr.
fn browse(page: &Path, profile: &Path, extra: &[&str]) -> (String, String) {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn console_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("CONSOLE")).collect()
}

/// (width, height, RGB pixels) of a PNG.
fn pixels(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut rd = dec.read_info().unwrap();
    let mut buf = vec![0; rd.output_buffer_size().unwrap()];
    let info = rd.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    let px = buf[..info.buffer_size()]
        .chunks(step)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    (info.width, info.height, px)
}

fn near(p: [u8; 3], q: [u8; 3], tol: i32) -> bool {
    p.iter()
        .zip(q)
        .all(|(a, b)| (i32::from(*a) - i32::from(b)).abs() <= tol)
}

#[test]
fn report_is_self_contained_and_renders_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("r.ring");
    let mut sc = Scenario::random(11, Some(Culprit::Endpoint));
    if let Some(f) = &mut sc.fault {
        f.pick = 2; // 10.0.1.3:8080
        f.share = 0.05;
    }
    {
        let w = RingWriter::create(&ring, 24 << 20, sc.workers).unwrap();
        sc.write(&w).unwrap();
    }
    let html_path = dir.path().join("report.html");
    let out = Command::new(BIN)
        .args(["report", "--ring"])
        .arg(&ring)
        .arg("--out")
        .arg(&html_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&html_path).unwrap();

    // Self-contained: nothing to fetch, no script.
    for banned in ["<script", "<link", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(banned), "report contains {banned}");
    }
    // The story: plot with a spike band, rates, attribution, verdict, slowest.
    for needed in [
        "id=\"latency\"",
        "class=\"band\"",
        "id=\"rps\"",
        "id=\"errors\"",
        "id=\"spikes\"",
        "class=\"attribution\"",
        "class=\"verdict\"",
        "class=\"phases\"",
        "id=\"slowest\"",
    ] {
        assert!(html.contains(needed), "report lacks {needed}");
    }
    let verdict = html
        .split("<p class=\"verdict\">")
        .nth(1)
        .and_then(|s| s.split("</p>").next())
        .unwrap();
    assert!(
        verdict.contains("endpoint=10.0.1.3:8080") && verdict.contains("first_byte"),
        "{verdict}"
    );

    // The console check can fail: a page that logs an error is caught.
    let bad = dir.path().join("bad.html");
    std::fs::write(
        &bad,
        "<html><body><script>console.error('boom')</script></body></html>",
    )
    .unwrap();
    let (_, err) = browse(&bad, &dir.path().join("p0"), &["--dump-dom"]);
    assert!(
        console_lines(&err).iter().any(|l| l.contains("boom")),
        "console capture does not work: {err}"
    );

    // Rendered: the DOM has the charts and tables; no console message.
    let (dom, err) = browse(&html_path, &dir.path().join("p1"), &["--dump-dom"]);
    assert!(console_lines(&err).is_empty(), "{:?}", console_lines(&err));
    assert!(dom.contains("<svg id=\"latency\"") && dom.contains("<table class=\"attribution\""));

    // Screenshot: not blank, and the plot's colours are on it.
    let shot = dir.path().join("shot.png");
    let (_, err) = browse(
        &html_path,
        &dir.path().join("p2"),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,1400",
        ],
    );
    assert!(console_lines(&err).is_empty(), "{:?}", console_lines(&err));
    let (w, h, px) = pixels(&shot);
    assert_eq!((w, h), (1200, 1400));
    let white = px.iter().filter(|p| near(**p, [255, 255, 255], 3)).count();
    let inked = px.len() - white;
    let count = |c: [u8; 3]| px.iter().filter(|p| near(**p, c, 40)).count();
    let p999 = count([0xe8, 0x59, 0x0c]);
    let p99 = count([0x1c, 0x7e, 0xd6]);
    // #fa5252 at 16% over #fcfcfd.
    let band = px.iter().filter(|p| near(**p, [252, 225, 226], 6)).count();
    if let Ok(keep) = std::env::var("REPORT_SHOT_COPY") {
        std::fs::copy(&shot, keep).unwrap();
        std::fs::copy(
            &html_path,
            format!("{}.html", std::env::var("REPORT_SHOT_COPY").unwrap()),
        )
        .unwrap();
    }
    println!("screenshot {w}x{h}: inked {inked}, p99.9 {p999}, p99 {p99}, band {band}");
    assert!(inked > px.len() / 20, "mostly blank: {inked} inked pixels");
    assert!(p999 > 200 && p99 > 200, "series not drawn: {p999} {p99}");
    assert!(band > 500, "spike band not drawn: {band}");
}
