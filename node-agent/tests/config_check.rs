//! `node-agent check-config` on the shipped examples and on broken files:
//! exit status and messages an operator can act on.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_node-agent");

#[test]
fn check_config_accepts_examples_and_names_problems() {
    let ex = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(ex.join("local.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "local.yaml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid:"));
    // The design brief's example uses every cluster policy; each is
    // enforced now, so it validates.
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(ex.join("design-example.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "design-example.yaml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "version: 1\nroutes:\n  - { name: r, to: [ { cluster: ghost } ] }\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("routes[r]: to[0].cluster: no cluster named \"ghost\""),
        "{err}"
    );
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(dir.path().join("missing.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yaml"));
    // Serving flags are checked before anything binds.
    let out = Command::new(BIN)
        .arg("--config")
        .arg(ex.join("local.yaml"))
        .args(["--drain-timeout", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--drain-timeout"));
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a bad config is reported before anything else"
    );
}

/// TLS files are read by check-config as at start: a missing certificate
/// or an identity outside its trust domain fails, naming the key.
#[test]
fn check_config_reads_the_tls_files_a_config_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = d.join("tls.yaml");
    std::fs::write(
        &missing,
        format!(
            r#"version: 1
listeners:
  - {{ name: web, bind: "127.0.0.1:8443", protocol: http, default_route: r, tls: {{ cert: "{0}/none.crt", key: "{0}/none.key" }} }}
clusters:
  - {{ name: c, endpoints: [ {{ addr: "127.0.0.1:1" }} ] }}
routes:
  - {{ name: r, to: [ {{ cluster: c }} ] }}
"#,
            d.display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&missing)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("listeners[web]: tls:") && err.contains("none.crt"),
        "{err}"
    );
    let id = d.join("id.yaml");
    std::fs::write(
        &id,
        format!(
            "version: 1\nidentity: {{ cert: \"{0}/a.crt\", key: \"{0}/a.key\", trust_bundle: \"{0}/b.pem\", trust_domain: td.test }}\n",
            d.display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&id)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("identity:") && err.contains("a.crt"), "{err}");
}
