//! The Kubernetes manifests (deploy/kubernetes) validate against the
//! Kubernetes schemas offline (`kubernetes-validate --strict`, from PyPI;
//! ./test.sh installs it), a broken copy does not (the check can fail), the
//! ConfigMap's agent config passes `node-agent check-config`, and the
//! DaemonSet agrees with the rest of the repository: the seccomp profile
//! it names is the shipped one, the grace period outlasts the drain, the
//! probes hit the admin port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const AGENT: &str = env!("CARGO_BIN_EXE_node-agent");

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn validate(files: &[PathBuf]) -> std::process::Output {
    Command::new("kubernetes-validate")
        .args(["--strict", "--no-warn"])
        .args(files)
        .output()
        .expect("kubernetes-validate is not installed: ./test.sh installs it (pip install kubernetes-validate)")
}

fn docs(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .split("\n---\n")
        .map(|d| serde_saphyr::from_str::<serde_json::Value>(d).unwrap())
        .collect()
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let dir = deploy().join("kubernetes");
    let files: Vec<PathBuf> = [
        "namespace.yaml",
        "configmap.yaml",
        "daemonset.yaml",
        "service.yaml",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    let out = validate(&files);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A misspelled field is caught: the validation can fail.
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.yaml");
    let text = std::fs::read_to_string(dir.join("daemonset.yaml")).unwrap();
    std::fs::write(&broken, text.replace("hostNetwork:", "hostNetwrk:")).unwrap();
    assert!(!validate(&[broken]).status.success());
}

#[test]
fn the_configmap_config_is_valid_and_the_daemonset_matches_the_repository() {
    let dir = deploy().join("kubernetes");
    let cm = &docs(&dir.join("configmap.yaml"))[0];
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("agent.yaml");
    std::fs::write(&cfg, cm["data"]["agent.yaml"].as_str().unwrap()).unwrap();
    let out = Command::new(AGENT)
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ds = docs(&dir.join("daemonset.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "DaemonSet")
        .unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let agent = &pod["containers"][0];
    let profile = agent["securityContext"]["seccompProfile"]["localhostProfile"]
        .as_str()
        .unwrap();
    let name = Path::new(profile).file_name().unwrap();
    assert!(
        deploy().join("seccomp").join(name).exists(),
        "the DaemonSet names {profile}, not shipped in deploy/seccomp"
    );
    let args: Vec<&str> = agent["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&"--config=/etc/tailmesh/agent.yaml"),
        "{args:?}"
    );
    let drain_s: u64 = args
        .iter()
        .find_map(|a| a.strip_prefix("--drain-timeout="))
        .and_then(|d| d.strip_suffix('s'))
        .unwrap()
        .parse()
        .unwrap();
    let pause = agent["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > drain_s + pause,
        "grace {grace}s <= drain {drain_s}s + preStop {pause}s"
    );
    assert!(
        args.iter()
            .any(|a| a.ends_with(":15000") && a.starts_with("--admin="))
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(agent[probe]["httpGet"]["port"], 15000, "{probe}");
    }
    let init = &pod["initContainers"][0];
    assert_eq!(init["command"][1], "install");
    assert!(
        init["command"][0]
            .as_str()
            .unwrap()
            .ends_with("tailmesh-redirect.sh")
    );
}
