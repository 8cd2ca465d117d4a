#!/usr/bin/env bash
# Installs what the tests need (idempotently), then runs every test.
# CI (.ci/run) calls this and nothing else. Runs as root on CI; as another
# user, package installation is skipped and missing tools fail loudly.
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '\n==> %s\n' "$*"; }

# --- prerequisites ----------------------------------------------------------
# Debian packages the tests use: the benchmark peers and wrk (bench tests),
# iproute2 + iptables (transparent-capture test in a network namespace),
# python3-seccomp (the `--io auto` fallback test blocks io_uring with a
# seccomp filter), chromium (the `ringlog report` page is rendered headless),
# apache2-utils (`ab -k`) and curl: clients we did not write, run through the
# agent by the hardening tests, etcd-server (the etcd config source is
# tested against a real etcd) and protobuf-compiler (the etcd-client crate
# compiles etcd's protobuf definitions with protoc at build time), and
# prometheus (its server and promtool check the deploy/prometheus and
# deploy/grafana files against a real agent).
PKGS=(haproxy nginx-light wrk iproute2 iptables python3-seccomp chromium apache2-utils curl openssl etcd-server protobuf-compiler prometheus)
missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: missing packages ${missing[*]} and not root to install them" >&2
    exit 1
  fi
  say "installing ${missing[*]}"
  # Tests start the peers themselves: keep the packages' own services from
  # starting (and claiming port 80) during installation.
  policy=/usr/sbin/policy-rc.d
  had_policy=0; [ -e "$policy" ] && had_policy=1
  [ $had_policy -eq 1 ] || { printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" || { [ $had_policy -eq 1 ] || rm -f "$policy"; exit 1; }
  [ $had_policy -eq 1 ] || rm -f "$policy"
fi
for tool in haproxy nginx wrk ip iptables chromium ab curl etcd protoc prometheus promtool; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "test.sh: $tool missing after install" >&2; exit 1; }
done
# kubernetes-validate (PyPI): the DaemonSet and ConfigMap are validated
# offline against the Kubernetes schemas (tests/deploy_kubernetes.rs).
if ! command -v kubernetes-validate >/dev/null; then
  say "installing kubernetes-validate (pip)"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore kubernetes-validate ||
    { echo "test.sh: pip install kubernetes-validate failed" >&2; exit 1; }
fi
command -v kubernetes-validate >/dev/null || { echo "test.sh: kubernetes-validate missing after install" >&2; exit 1; }
command -v cargo >/dev/null || { echo "test.sh: cargo not found" >&2; exit 1; }

export CARGO_TERM_COLOR=never
start=$(date +%s)

# --- static checks ----------------------------------------------------------
say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -q -- -D warnings

# --- tests ------------------------------------------------------------------
mkdir -p target
say "cargo test (workspace: unit, proptest, stress, crash, corpus, allocation)"
cargo test --workspace -q 2>&1 | tee target/test.log

say "agent integration tests again on the epoll driver (the run above used --io auto = uring)"
TAILMESH_TEST_IO=epoll cargo test -p node-agent -q --test agent_http --test agent_corpus \
  --test agent_process --test agent_capture --test agent_l4 --test agent_ringlog --test agent_pool \
  --test agent_hardening --test agent_hostile --test agent_smuggling --test agent_limits --test agent_policy --test agent_routing --test agent_balancing --test agent_reload --test agent_mtls --test agent_tls 2>&1 | tee -a target/test.log
grep -q "test result:" target/test.log

say "loom model of the commit protocol"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p ringlog --lib --release -q loom

say "benches compile"
cargo bench --workspace --no-run -q

say "end to end: tailmesh-bench ring write + verify, ringlog stat/tail"
cargo build --release -q -p tailmesh-bench -p ringlog-cli
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
./target/release/tailmesh-bench ring --writers 2 --seconds 1 --size 8MiB --file "$tmp/e2e.ring" --json | tee "$tmp/write.json"
./target/release/tailmesh-bench ring --verify "$tmp/e2e.ring" --json | tee "$tmp/verify.json"
grep -q '"corrupt":0' "$tmp/verify.json"
./target/release/ringlog stat --ring "$tmp/e2e.ring" --json > "$tmp/stat.json"
grep -q '"corrupt": 0' "$tmp/stat.json"
lines=$(./target/release/ringlog tail --ring "$tmp/e2e.ring" -n 5 --json | wc -l)
[ "$lines" -eq 5 ] || { echo "ringlog tail printed $lines lines, expected 5" >&2; exit 1; }

say "all checks passed in $(( $(date +%s) - start ))s"
