#!/usr/bin/env bash
# The README's first command. The full demo (agent + simulated upstreams +
# a latency spike explained by `ringlog why`) needs the analysis commands
# (issue #5), which do not exist yet; the agent serves (epoll driver, see
# docs/AGENT.md). Until then this demo shows the flight recorder, written
# at full speed by two writers, verified, and read back with `ringlog`.
set -euo pipefail
cd "$(dirname "$0")"

echo "tailmesh demo: spike analysis (ringlog spikes/why, issue #5) is not built yet."
echo "Showing the flight recorder instead."
echo
cargo build --release -q -p tailmesh-bench -p ringlog-cli
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ring="$tmp/demo.ring"

echo "== tailmesh-bench ring: 2 writers, 2 s, 16 MiB ring"
./target/release/tailmesh-bench ring --writers 2 --seconds 2 --size 16MiB --file "$ring"
echo
echo "== tailmesh-bench ring --verify: every record re-derived from the seed"
./target/release/tailmesh-bench ring --verify "$ring"
echo
echo "== ringlog stat"
./target/release/ringlog stat --ring "$ring"
echo
echo "== ringlog tail -n 5"
./target/release/ringlog tail --ring "$ring" -n 5
