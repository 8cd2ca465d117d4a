#!/usr/bin/env bash
# The README's first command: a p99.9 spike, found and explained by ringlog.
#
# Builds in release mode, starts two simulated upstreams (tailmesh-bench
# upstream on 127.0.0.1:19001 and :19002) and the agent on its embedded
# default config (deploy/examples/local.yaml: 127.0.0.1:18000, a 50/50 split
# over the two, request types market / limit / cancel sampled 1.0 / 0.1 /
# 0.5, no etcd). It drives 40 s of open-loop load; 25 s in, it makes
# 127.0.0.1:19002 slow for 5 s through the upstream's control endpoint.
# Then `ringlog spikes`, `ringlog why` and `ringlog report`. Everything
# started here is stopped on exit, also on Ctrl-C or an error.
set -euo pipefail
cd "$(dirname "$0")"

RATE=${DEMO_RATE:-1500}
LOAD_S=${DEMO_SECONDS:-40}
FAULT_AT=${DEMO_FAULT_AT:-25}
RING=/tmp/tailmesh-demo.ring # ring.path in deploy/examples/local.yaml
REPORT=${DEMO_REPORT:-$PWD/report.html}

for port in 18000 19001 19002 15000; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: 127.0.0.1:$port is already in use; stop whatever listens there first" >&2
    exit 1
  fi
done

# The etcd client crate compiles etcd's protobuf files with protoc.
if ! command -v protoc >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "== installing protobuf-compiler (protoc, needed to build the etcd client)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null; }
  else
    echo "demo: protoc is missing; install the protobuf-compiler package (as root: apt-get install protobuf-compiler)" >&2
    exit 1
  fi
fi

echo "== building (release)"
cargo build --release -q -p node-agent -p tailmesh-bench -p ringlog-cli
bin=./target/release

logs=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$logs"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # port, what
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "demo: $2 did not listen on 127.0.0.1:$1; its log:" >&2
  cat "$logs/$2.log" >&2
  exit 1
}

for i in 1 2; do
  "$bin/tailmesh-bench" upstream --listen "127.0.0.1:1900$i" --name "up$i" --workers 1 \
    >"$logs/up$i.log" 2>&1 &
  pids+=($!)
  wait_port "1900$i" "up$i"
done

echo "== agent on the embedded default config (ring $RING)"
rm -f "$RING"
"$bin/node-agent" --workers 1 >"$logs/agent.log" 2>&1 &
agent=$!
pids+=($agent)
wait_port 18000 agent

echo "== load: ${RATE} req/s for ${LOAD_S}s, market/limit/cancel 40/40/20; fault at ${FAULT_AT}s"
"$bin/tailmesh-bench" load --url http://127.0.0.1:18000/orders --rate "$RATE" \
  --duration "${LOAD_S}s" --connections 32 --timeout 2s \
  --type market:40:x-order-type=market --type limit:40:x-order-type=limit \
  --type cancel:20:x-order-type=cancel >"$logs/load.log" 2>&1 &
load=$!
pids+=($load)

sleep "$FAULT_AT"
# PUT /_bench/faults on the upstream's own port: +60 ms for the next 5 s.
fault='{"latency":"60ms","latency_window":{"after":"0s","for":"5s"}}'
exec 3<>/dev/tcp/127.0.0.1/19002
printf 'PUT /_bench/faults HTTP/1.1\r\nhost: demo\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s' \
  "${#fault}" "$fault" >&3
status=$(head -n1 <&3 | tr -d '\r')
exec 3>&-
case "$status" in
  *" 200 "*) ;;
  *) echo "demo: the upstream refused the fault: $status" >&2; exit 1 ;;
esac
echo "   $(date +%T) injected 60 ms on 127.0.0.1:19002 for 5 s ($status)"

wait "$load" || { echo "demo: the load generator failed:" >&2; cat "$logs/load.log" >&2; exit 1; }
echo
tail -n 12 "$logs/load.log"
kill -TERM "$agent"
wait "$agent" || true

echo
echo "== ringlog spikes --ring $RING"
"$bin/ringlog" spikes --ring "$RING"
echo
echo "== ringlog why --ring $RING"
"$bin/ringlog" why --ring "$RING"
echo
echo "== ringlog report --ring $RING --out $REPORT"
"$bin/ringlog" report --ring "$RING" --out "$REPORT"
echo
echo "Open $REPORT in a browser: latency per second with the spike shaded, its attribution and verdict."
