#!/usr/bin/env bash
# bench.sh: Butterfly against the Linux kernel (and DPDK's vhost-user back end), measured side by
# side in one run. A thin wrapper: it installs what the benchmark needs (Debian 12), builds the Go
# benchmark program (scripts/bench, on the lab harness internal/labtest) and runs it with the same
# arguments. Sections and knobs are described in scripts/bench/main.go (go doc ./scripts/bench):
#
#   ./scripts/bench.sh [flags] [paths] [idle] [api] [go] [firewall] [vhost] [cluster]   (default: paths idle api go)
#
# The BENCH_* environment variables (BENCH_SECONDS, BENCH_UDP_SECONDS, BENCH_PINGS, BENCH_IDLE_SECONDS,
# BENCH_OUT, BENCH_DAEMON_ARGS, BENCH_API_NICS, BENCH_API_GROUPS, BENCH_API_RULES, BENCH_API_NIC_TYPE,
# BENCH_API_LATENCY_SAMPLES, BENCH_API_VHOST_CONNECTED, BENCH_FW_ROUNDS, BENCH_VHOST_SECONDS, BENCH_VHOST_WARM, BENCH_VHOST_ROUNDS,
# BENCH_VHOST_BACKENDS, BENCH_VHOST_CASES, BENCH_VHOST_PPROF, BENCH_CLUSTER_ARPS, BENCH_CLUSTER_NICS, BENCH_CLUSTER_GROUPS, BENCH_CLUSTER_RULES)
# are the defaults of the program's flags. Run as root.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

[ "$(id -u)" = 0 ] || { echo "bench.sh: run as root (namespaces, TAP devices)" >&2; exit 1; }

need_pkgs=()
for c in iperf3:iperf3 ping:iputils-ping ip:iproute2 curl:curl nft:nftables pkg-config:pkg-config gcc:gcc; do
	command -v "${c%%:*}" >/dev/null 2>&1 || need_pkgs+=("${c#*:}")
done
for p in libzmq3-dev libc6-dev; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
for a in "$@"; do
	if [ "$a" = cluster ]; then
		command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)
		command -v etcdctl >/dev/null 2>&1 || need_pkgs+=(etcd-client)
	fi
done
if ((${#need_pkgs[@]})); then
	echo "bench: installing ${need_pkgs[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "bench.sh: Go 1.26 is required (expected at /usr/local/go/bin/go)" >&2; exit 1; }

BIN=$(mktemp -d /tmp/bfb-bin.XXXXXX)
trap 'rm -rf "$BIN"' EXIT
go build -o "$BIN/bench" ./scripts/bench || { echo "bench: build failed" >&2; exit 1; }
"$BIN/bench" "$@"
