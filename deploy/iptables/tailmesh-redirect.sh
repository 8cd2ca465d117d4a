#!/bin/sh
# tailmesh-redirect.sh install|uninstall|status [options]
#
# Sends the node's pod TCP traffic through the tailmesh agent with iptables
# nat REDIRECT rules in chains of their own (works with the nft backend,
# Debian's default, and the legacy one):
#   - outbound: TCP from the pod CIDR (arriving on the node from a pod) to
#     the agent's outbound listener (default :15001);
#   - inbound: TCP to the pod CIDR from outside it, to the agent's inbound
#     listener (default :15006).
# Never redirected: packets carrying the agent's mark (its own upstream
# connections; the agent sets SO_MARK 0x539 when it has a transparent
# listener), traffic to the agent's admin port, and the excluded
# destination CIDRs and ports. install is idempotent (it rebuilds its
# chains); uninstall removes every rule and chain it made; status prints
# them and exits 1 if they are not installed.
#
# Options (or the environment variable in brackets):
#   --pod-cidr CIDR         pods' addresses [TAILMESH_POD_CIDR], required
#                           for install
#   --outbound-port PORT    [TAILMESH_OUTBOUND_PORT] default 15001
#   --inbound-port PORT     [TAILMESH_INBOUND_PORT] default 15006; 0: no
#                           inbound capture
#   --admin-port PORT       [TAILMESH_ADMIN_PORT] default 15000
#   --mark MARK             [TAILMESH_MARK] default 0x539
#   --exclude-cidr CIDR     repeatable [TAILMESH_EXCLUDE_CIDRS, comma list]
#   --exclude-port PORT     repeatable [TAILMESH_EXCLUDE_PORTS, comma list]
#   --iptables CMD          [TAILMESH_IPTABLES] default iptables
set -eu

usage() {
	sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
}

[ $# -ge 1 ] || usage
action=$1
shift

pod_cidr=${TAILMESH_POD_CIDR:-}
out_port=${TAILMESH_OUTBOUND_PORT:-15001}
in_port=${TAILMESH_INBOUND_PORT:-15006}
admin_port=${TAILMESH_ADMIN_PORT:-15000}
mark=${TAILMESH_MARK:-0x539}
ipt=${TAILMESH_IPTABLES:-iptables}
ex_cidrs=$(printf '%s' "${TAILMESH_EXCLUDE_CIDRS:-}" | tr ',' ' ')
ex_ports=$(printf '%s' "${TAILMESH_EXCLUDE_PORTS:-}" | tr ',' ' ')

while [ $# -gt 0 ]; do
	case $1 in
	--pod-cidr) pod_cidr=$2; shift 2 ;;
	--outbound-port) out_port=$2; shift 2 ;;
	--inbound-port) in_port=$2; shift 2 ;;
	--admin-port) admin_port=$2; shift 2 ;;
	--mark) mark=$2; shift 2 ;;
	--exclude-cidr) ex_cidrs="$ex_cidrs $2"; shift 2 ;;
	--exclude-port) ex_ports="$ex_ports $2"; shift 2 ;;
	--iptables) ipt=$2; shift 2 ;;
	-h | --help) usage ;;
	*) echo "tailmesh-redirect: unknown option $1" >&2; exit 2 ;;
	esac
done

# Our chains in the nat table, and where they hang.
CHAIN=TAILMESH_PREROUTING
OUT=TAILMESH_OUTBOUND
IN=TAILMESH_INBOUND

has_chain() { $ipt -t nat -S "$1" >/dev/null 2>&1; }

uninstall() {
	while $ipt -t nat -C PREROUTING -j "$CHAIN" 2>/dev/null; do
		$ipt -t nat -D PREROUTING -j "$CHAIN"
	done
	for c in "$CHAIN" "$OUT" "$IN"; do
		if has_chain "$c"; then
			$ipt -t nat -F "$c"
			$ipt -t nat -X "$c"
		fi
	done
}

port_ok() {
	case $1 in
	'' | *[!0-9]*) echo "tailmesh-redirect: $2: $1 is not a port" >&2; exit 2 ;;
	esac
	if [ "$1" -gt 65535 ]; then
		echo "tailmesh-redirect: $2: $1 is not a port" >&2
		exit 2
	fi
}

install() {
	if [ -z "$pod_cidr" ]; then
		echo "tailmesh-redirect: install needs --pod-cidr (or TAILMESH_POD_CIDR)" >&2
		exit 2
	fi
	port_ok "$out_port" --outbound-port
	port_ok "$in_port" --inbound-port
	port_ok "$admin_port" --admin-port
	for p in $ex_ports; do port_ok "$p" --exclude-port; done
	# Rebuild from nothing: running install twice leaves one set of rules.
	uninstall
	$ipt -t nat -N "$CHAIN"
	$ipt -t nat -N "$OUT"
	$ipt -t nat -A "$CHAIN" -p tcp -m mark --mark "$mark" -j RETURN
	$ipt -t nat -A "$CHAIN" -p tcp --dport "$admin_port" -j RETURN
	for c in $ex_cidrs; do
		$ipt -t nat -A "$CHAIN" -p tcp -d "$c" -j RETURN
	done
	for p in $ex_ports; do
		$ipt -t nat -A "$CHAIN" -p tcp --dport "$p" -j RETURN
	done
	$ipt -t nat -A "$CHAIN" -p tcp -s "$pod_cidr" -j "$OUT"
	$ipt -t nat -A "$OUT" -p tcp -j REDIRECT --to-ports "$out_port"
	if [ "$in_port" != 0 ]; then
		$ipt -t nat -N "$IN"
		$ipt -t nat -A "$CHAIN" -p tcp ! -s "$pod_cidr" -d "$pod_cidr" -j "$IN"
		$ipt -t nat -A "$IN" -p tcp -j REDIRECT --to-ports "$in_port"
	fi
	$ipt -t nat -A PREROUTING -j "$CHAIN"
}

status() {
	if ! has_chain "$CHAIN" || ! $ipt -t nat -C PREROUTING -j "$CHAIN" 2>/dev/null; then
		echo "tailmesh-redirect: not installed"
		return 1
	fi
	echo "tailmesh-redirect: installed"
	for c in "$CHAIN" "$OUT" "$IN"; do
		if has_chain "$c"; then $ipt -t nat -S "$c"; fi
	done
}

case $action in
install) install ;;
uninstall) uninstall ;;
status) status ;;
*) usage ;;
esac
