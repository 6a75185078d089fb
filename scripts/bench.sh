#!/usr/bin/env bash
# bench.sh: Butterfly against the Linux kernel, measured side by side in one run.
#
#   k-bridge   vmA --veth-- [Linux bridge] --veth-- vmB                 (one host)
#   bf-local   vmA --TAP-- [butterflyd] --TAP-- vmB                      (one host)
#   k-vxlan    vmA --veth-- [bridge+vxlan] ==veth underlay== [bridge+vxlan] --veth-- vmB
#   bf-vxlan   vmA --TAP-- [butterflyd] ==veth underlay, VXLAN== [butterflyd] --TAP-- vmB
#
# For each: ping min/avg (BENCH_PINGS pings 20 ms apart, then 20 x BENCH_PINGS 0.2 ms apart),
# iperf3 TCP one stream (BENCH_SECONDS, default 10 s) and iperf3 UDP 64-byte datagrams at full
# speed (-b 0, BENCH_UDP_SECONDS, default 5 s).
# Then: butterflyd's idle CPU with 100 idle TAP vNICs, the dataplane's Go benchmarks (ns per
# packet), the API server's Go benchmark and the time to create 1,000 vNICs and 100 security
# groups of 100 rules. Load average and hypervisor steal are recorded with every figure:
# compare only figures of the same run.
#
# Every "host" and "VM" is a network namespace this script creates (prefix bfb<pid>); all
# addresses are private and stay inside them. Everything is removed on exit, even on failure.
# Run as root on Debian 12: ./scripts/bench.sh [paths] [idle] [api] [go] [firewall]   (default: all
# but firewall; the firewall section, described above fw_bench, writes $BENCH_OUT/firewall.md)
# Results: stdout and $BENCH_OUT/results.md.
# BENCH_DAEMON_ARGS adds options to every butterflyd (e.g. "--poll-idle never").
# Section vhost (not in the default; needs dpdk-testpmd): vhost-user VM to VM against DPDK's vhost
# back end, see vhost_bench; writes $BENCH_OUT/vhost.md.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PATH=/usr/local/go/bin:$PATH
SECS=${BENCH_SECONDS:-10}
UDP_SECS=${BENCH_UDP_SECONDS:-5}
PINGS=${BENCH_PINGS:-50}
IDLE_SECS=${BENCH_IDLE_SECONDS:-10}
OUT=${BENCH_OUT:-$(mktemp -d /tmp/butterfly-bench.XXXXXX)}
P=bfb$$
WORK=$(mktemp -d /tmp/bfb.XXXXXX)
mkdir -p "$OUT"

[ "$(id -u)" = 0 ] || { echo "bench.sh: run as root (namespaces, TAP devices)" >&2; exit 1; }

need_pkgs=()
for c in iperf3:iperf3 jq:jq ping:iputils-ping ip:iproute2 pkg-config:pkg-config gcc:gcc; do
	command -v "${c%%:*}" >/dev/null 2>&1 || need_pkgs+=("${c#*:}")
done
for p in libzmq3-dev libc6-dev; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
	echo "bench: installing ${need_pkgs[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "bench.sh: Go 1.26 is required (expected at /usr/local/go/bin/go)" >&2; exit 1; }

# ---- bookkeeping ------------------------------------------------------------------------------
PIDS=()       # processes this script started (daemons, iperf3 servers)
NSS=()        # namespaces this script created
cleanup() {
	local p n
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	PIDS=()
	for n in "${NSS[@]}"; do ip netns del "$n" 2>/dev/null; done
	NSS=()
}
trap 'cleanup; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

mkns() { ip netns add "$P-$1" && ip -n "$P-$1" link set lo up && NSS+=("$P-$1"); }
nsx() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }

steal_snap() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t, $9}' /proc/stat; }
steal_since() { echo "$1 $(steal_snap)" | awk '{dt=$3-$1; printf "%.1f", (dt>0 ? 100*($4-$2)/dt : 0)}'; }
load1() { cut -d' ' -f1 /proc/loadavg; }

declare -A R   # R[label.metric] = value
MD="$OUT/results.md"
: >"$MD"
say() { echo "$*"; }

# measure LABEL CLIENT_NS SERVER_NS SERVER_IP: ping, TCP, UDP 64 B.
measure() {
	local L=$1 c=$2 s=$3 ip=$4 s0 ping pmin pavg pbusy tcp retr udp_s udp_r
	s0=$(steal_snap)
	nsx "$s" iperf3 -s -D -1 --pidfile "$WORK/iperf3.pid" >/dev/null 2>&1
	wait_listen "$s"
	ping=$(nsx "$c" ping -n -q -c "$PINGS" -i 0.02 "$ip" | tail -1)
	pmin=$(echo "$ping" | awk -F'[/ ]+' '/min\/avg/{print $7}')
	pavg=$(echo "$ping" | awk -F'[/ ]+' '/min\/avg/{print $8}')
	# 0.2 ms apart: a switch that sleeps after an idle spell never gets to sleep
	pbusy=$(nsx "$c" ping -n -q -c $((PINGS * 20)) -i 0.0002 "$ip" | tail -1 | awk -F'[/ ]+' '/min\/avg/{print $8}')
	nsx "$c" iperf3 -c "$ip" -t "$SECS" -J >"$OUT/$L-tcp.json" 2>&1
	tcp=$(jq -r '.end.sum_received.bits_per_second/1e9*1000|floor/1000' "$OUT/$L-tcp.json" 2>/dev/null || echo 0)
	retr=$(jq -r '.end.sum_sent.retransmits' "$OUT/$L-tcp.json" 2>/dev/null || echo "?")
	nsx "$s" iperf3 -s -D -1 --pidfile "$WORK/iperf3.pid" >/dev/null 2>&1
	wait_listen "$s"
	nsx "$c" iperf3 -c "$ip" -u -b 0 -l 64 -t "$UDP_SECS" -J >"$OUT/$L-udp64.json" 2>&1
	udp_s=$(jq -r '.end.sum | (.packets/.seconds)|floor' "$OUT/$L-udp64.json" 2>/dev/null || echo 0)
	udp_r=$(jq -r '.end.sum | ((.packets-.lost_packets)/.seconds)|floor' "$OUT/$L-udp64.json" 2>/dev/null || echo 0)
	R[$L.pmin]=${pmin:-0} R[$L.pavg]=${pavg:-0} R[$L.pbusy]=${pbusy:-0} R[$L.tcp]=${tcp:-0} R[$L.retr]=$retr
	R[$L.udps]=$udp_s R[$L.udpr]=$udp_r R[$L.steal]=$(steal_since "$s0") R[$L.load]=$(load1)
	say "RESULT $L | ping min/avg ${pmin:-?}/${pavg:-?} ms, avg ${pbusy:-?} ms at 0.2 ms intervals | tcp ${tcp} Gbit/s (retr $retr) | udp64 sent ${udp_s}/s rcvd ${udp_r}/s | steal ${R[$L.steal]}% load ${R[$L.load]}"
}

# wait_listen NS: until an iperf3 server listens on 5201 there (5 s).
wait_listen() {
	local i
	for i in $(seq 100); do
		nsx "$1" ss -Hltn 'sport = :5201' 2>/dev/null | grep -q . && return 0
		sleep 0.05
	done
	echo "bench: iperf3 server did not start in $1" >&2
}

# ---- kernel topologies --------------------------------------------------------------------------
setup_k_bridge() {
	mkns vmA && mkns vmB && mkns sw || return 1
	ip -n "$P-sw" link add br0 type bridge && ip -n "$P-sw" link set br0 up
	for x in A B; do
		ip -n "$P-sw" link add sw$x type veth peer name eth0 netns "$P-vm$x"
		ip -n "$P-sw" link set sw$x master br0 up
	done
	ip -n "$P-vmA" addr add 10.77.0.1/24 dev eth0 && ip -n "$P-vmA" link set eth0 up
	ip -n "$P-vmB" addr add 10.77.0.2/24 dev eth0 && ip -n "$P-vmB" link set eth0 up
}

# underlay H1 H2: veth "ul" between two host namespaces, 10.78.0.1/.2, MTU 1500.
underlay() {
	ip -n "$P-$1" link add ul type veth peer name ul netns "$P-$2" || return 1
	ip -n "$P-$1" addr add 10.78.0.1/24 dev ul && ip -n "$P-$1" link set ul up
	ip -n "$P-$2" addr add 10.78.0.2/24 dev ul && ip -n "$P-$2" link set ul up
	ip -n "$P-$1" route add 224.0.0.0/4 dev ul && ip -n "$P-$2" route add 224.0.0.0/4 dev ul
}

setup_k_vxlan() {
	mkns vmA && mkns vmB && mkns h1 && mkns h2 || return 1
	underlay h1 h2 || return 1
	local i h vm
	for i in 1 2; do
		h=$P-h$i
		[ $i = 1 ] && vm=$P-vmA || vm=$P-vmB
		ip -n "$h" link add br0 type bridge && ip -n "$h" link set br0 up
		ip -n "$h" link add vx42 type vxlan id 42 local 10.78.0.$i remote 10.78.0.$((3 - i)) dstport 4789 dev ul
		ip -n "$h" link set vx42 master br0 up
		ip -n "$h" link add port0 type veth peer name eth0 netns "$vm"
		ip -n "$h" link set port0 master br0 up
	done
	# tenant MTU = 1500 - 50 bytes of VXLAN/UDP/IPv4/Ethernet
	ip -n "$P-vmA" link set eth0 mtu 1450 && ip -n "$P-vmB" link set eth0 mtu 1450
	ip -n "$P-vmA" addr add 10.77.0.1/24 dev eth0 && ip -n "$P-vmA" link set eth0 up
	ip -n "$P-vmB" addr add 10.77.0.2/24 dev eth0 && ip -n "$P-vmB" link set eth0 up
}

# ---- butterfly topologies -----------------------------------------------------------------------
BIN=$WORK/bin
build_bf() {
	mkdir -p "$BIN"
	go build -o "$BIN/butterflyd" ./cmd/butterflyd && go build -o "$BIN/butterfly" ./cmd/butterfly &&
		go build -o "$BIN/apibench" ./scripts/apibench
}
declare -A EP DPID
# start_bf HOST VTEP [flags...]: butterflyd in namespace HOST, API on an ipc socket.
start_bf() {
	local h=$1 ip=$2 i
	shift 2
	mkdir -p "$WORK/$h/sock"
	EP[$h]="ipc://$WORK/$h/api"
	ip netns exec "$P-$h" "$BIN/butterflyd" --ip "$ip" --endpoint "${EP[$h]}" --socket-dir "$WORK/$h/sock" \
		--state-file "$WORK/$h/state.json" --trace-dir "$WORK/trace" --auto-key none --no-syslog --log-level error \
		${BENCH_DAEMON_ARGS:-} "$@" >>"$OUT/butterflyd-$h.log" 2>&1 &
	DPID[$h]=$!
	PIDS+=($!)
	for i in $(seq 100); do
		bf "$h" status >/dev/null 2>&1 && return 0
		kill -0 "${DPID[$h]}" 2>/dev/null || break
		sleep 0.1
	done
	echo "bench: butterflyd on $h did not start (see $OUT/butterflyd-$h.log)" >&2
	return 1
}
bf() { local h=$1; shift; "$BIN/butterfly" -e "${EP[$h]}" -k none --timeout 30000 "$@"; }
open_sg() {
	bf "$1" sg rule add sg-open --ip-proto all --cidr 0.0.0.0/0 >/dev/null &&
		bf "$1" sg rule add sg-open --ip-proto all --cidr ::/0 >/dev/null
}
# plug HOST VM ID MAC IP MTU: TAP vNIC ID (VNI 42) moved into namespace VM as eth0.
plug() {
	local h=$1 vm=$P-$2 id=$3 mac=$4 ip=$5 mtu=$6 tap
	tap=$(bf "$h" nic add --id "$id" --mac "$mac" --vni 42 --ip "$ip" --sg sg-open --type TAP | tail -n1) || return 1
	ip -n "$P-$h" link set "$tap" netns "$vm" &&
		ip -n "$vm" link set "$tap" name eth0 &&
		ip -n "$vm" link set eth0 address "$mac" mtu "$mtu" &&
		ip -n "$vm" addr add "$ip/24" dev eth0 &&
		ip -n "$vm" link set eth0 up
}
# lone_underlay HOST: give HOST a 10.78.0.1 underlay link whose peer is in an empty namespace.
lone_underlay() {
	mkns void || return 1
	ip -n "$P-$1" link add ul type veth peer name ul netns "$P-void" &&
		ip -n "$P-void" link set ul up &&
		ip -n "$P-$1" addr add 10.78.0.1/24 dev ul && ip -n "$P-$1" link set ul up
}
setup_bf_local() {
	mkns vmA && mkns vmB && mkns h1 && lone_underlay h1 || return 1
	start_bf h1 10.78.0.1 && open_sg h1 || return 1
	plug h1 vmA nic-a 52:54:00:00:00:0a 10.77.0.1 1500 && plug h1 vmB nic-b 52:54:00:00:00:0b 10.77.0.2 1500
}
setup_bf_vxlan() {
	mkns vmA && mkns vmB && mkns h1 && mkns h2 && underlay h1 h2 || return 1
	start_bf h1 10.78.0.1 && start_bf h2 10.78.0.2 && open_sg h1 && open_sg h2 || return 1
	# same tenant MTU as the kernel VXLAN: 1500 - 50
	plug h1 vmA nic-a 52:54:00:00:00:0a 10.77.0.1 1450 && plug h2 vmB nic-b 52:54:00:00:00:0b 10.77.0.2 1450
}

# idle_sample PID KEY: PID's CPU use over IDLE_SECS (from /proc/PID/stat) into R[KEY.cpu] (% of one
# CPU), with the machine's steal and load in R[KEY.steal] and R[KEY.load].
idle_sample() {
	local pid=$1 key=$2 t0 t1 s0 hz
	hz=$(getconf CLK_TCK)
	s0=$(steal_snap)
	t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
	sleep "$IDLE_SECS"
	t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
	R[$key.cpu]=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$IDLE_SECS" 'BEGIN{printf "%.2f", 100*(b-a)/hz/s}')
	R[$key.steal]=$(steal_since "$s0") R[$key.load]=$(load1)
}

# idle_cpu: butterflyd with 100 idle TAP vNICs, then also 100 vhost-user vNICs; its CPU use.
idle_cpu() {
	cleanup
	mkns h1 && lone_underlay h1 && start_bf h1 10.78.0.1 && open_sg h1 || { say "RESULT idle-cpu | setup failed"; return; }
	local i pid=${DPID[h1]}
	for i in $(seq 100); do
		bf h1 nic add --id "idle-$i" --mac "$(printf '52:54:00:00:01:%02x' "$i")" --vni $((1000 + i % 10)) \
			--ip "10.79.0.$i" --sg sg-open --type TAP >/dev/null || { say "RESULT idle-cpu | nic add failed"; return; }
	done
	sleep 2 # let the daemon settle after the adds before sampling
	idle_sample "$pid" idle
	say "RESULT idle-cpu | butterflyd with 100 idle TAP vNICs: ${R[idle.cpu]}% of one CPU over ${IDLE_SECS}s | steal ${R[idle.steal]}% load ${R[idle.load]}"
	# Then 100 vhost-user vNICs on the same daemon, two of them connected to a testpmd whose
	# ports are started but send nothing (rings live, no traffic): the daemon must sleep.
	local a b
	for i in $(seq 100); do
		bf h1 nic add --id "idlev-$i" --mac "$(printf '52:54:00:00:02:%02x' "$i")" --vni $((1000 + i % 10)) \
			--ip "10.79.1.$i" --sg sg-open --type VHOST_USER_SERVER >/dev/null || { say "RESULT idle-cpu-vhost | nic add failed"; cleanup; return; }
	done
	a=$WORK/h1/sock/qemu-vhost-idlev-1 b=$WORK/h1/sock/qemu-vhost-idlev-2
	if command -v dpdk-testpmd >/dev/null && vh_tp idle 0@0,1@0 --vdev "virtio_user0,path=$a,queues=1" \
		--vdev "virtio_user1,path=$b,queues=1" -- -i --total-num-mbufs=8192; then
		sleep 2
		idle_sample "$pid" idlev
		say "RESULT idle-cpu-vhost | butterflyd with 100 idle TAP + 100 vhost-user vNICs (2 connected to an idle testpmd): ${R[idlev.cpu]}% of one CPU over ${IDLE_SECS}s | steal ${R[idlev.steal]}% load ${R[idlev.load]}"
		vh_tp_end idle
	else
		say "RESULT idle-cpu-vhost | testpmd did not start"
	fi
	cleanup
}

# api: 1,000 vNICs then 100 groups of 100 rules through the API (scripts/apibench), first with
# the state file (persisted after every change, as in production), then without one.
api_bench() {
	local mode label s0
	: >"$OUT/apibench.txt"
	for mode in persisted volatile; do
		cleanup
		local flags=() label=""
		if [ $mode = volatile ]; then flags=(--state-file ""); label="-no-state-file"; fi
		mkns h1 && lone_underlay h1 && start_bf h1 10.78.0.1 "${flags[@]}" || { say "RESULT api | setup failed"; return; }
		s0=$(steal_snap)
		"$BIN/apibench" -e "${EP[h1]}" -label "$label" -nics "${BENCH_API_NICS:-1000}" \
			-groups "${BENCH_API_GROUPS:-100}" -rules "${BENCH_API_RULES:-100}" \
			-type "${BENCH_API_NIC_TYPE:-TAP}" 2>&1 | tee -a "$OUT/apibench.txt"
		say "     ($mode: steal $(steal_since "$s0")% load $(load1))"
	done
	cleanup
}

# gobench LABEL PKGS...: go test benchmarks, raw lines kept.
gobench() {
	local L=$1 s0
	shift
	s0=$(steal_snap)
	go test -run '^$' -bench . -benchmem "$@" 2>&1 | tee "$OUT/$L.txt" | grep -E '^(Benchmark|ok|FAIL|---)' || true
	say "     ($L: steal $(steal_since "$s0")% load $(load1))"
}

# ---- firewall section -----------------------------------------------------------------------------
# One host, vmA -> vmB (iperf3 server in vmB), six paths in one run:
#   fw-bypass   butterfly, both TAP vNICs --bypass-filtering (no firewall, no anti-spoofing)
#   fw-open     butterfly, both vNICs in a group allowing everything (stateful firewall on each vNIC)
#   fw-100      butterfly, both vNICs in a group of 100 rules: 97 that never match, then the ones
#               iperf3 and ping need (TCP and UDP 5201, ICMP, from vmA's address)
#   k-nofw      kernel: veths on a Linux bridge, no filtering
#   k-nft-open  same, stateful nftables: ct established,related accept, invalid drop, new accept, drop
#   k-nft-100   same with the 97 non-matching rules before the allow rules, then drop
# The kernel's rules go in a bridge-family table when the kernel tracks connections on bridges
# (CONFIG_NF_CONNTRACK_BRIDGE); otherwise in an inet forward chain that bridged IPv4 traverses
# through br_netfilter (bridge-nf-call-iptables=1 in the switch namespace): the table says which.
# Durations: BENCH_SECONDS (default 5 here), BENCH_UDP_SECONDS (3), BENCH_PINGS (20); BENCH_FW_ROUNDS.
# Results: RESULT lines and $OUT/firewall.md.
FW_NFT=""  # how the kernel's rules were applied (bridge or inet+br_netfilter)

# fw_filler I: the I-th rule that iperf3's flows never match, as "PROTO PORT PREFIX".
fw_filler() { echo "$([ $(($1 % 2)) = 0 ] && echo tcp || echo udp) $((20000 + $1)) 10.200.$1.0/24"; }

# fw_bf_rules HOST: group sg-100 (fillers, then TCP/UDP 5201 and ICMP from 10.77.0.1).
fw_bf_rules() {
	local i pr po cidr
	for i in $(seq 97); do
		read -r pr po cidr <<<"$(fw_filler "$i")"
		bf "$1" sg rule add sg-100 --ip-proto "$pr" --port "$po" --cidr "$cidr" >/dev/null || return 1
	done
	bf "$1" sg rule add sg-100 --ip-proto tcp --port 5201 --cidr 10.77.0.1/32 >/dev/null &&
		bf "$1" sg rule add sg-100 --ip-proto udp --port 5201 --cidr 10.77.0.1/32 >/dev/null &&
		bf "$1" sg rule add sg-100 --ip-proto icmp --cidr 10.77.0.1/32 >/dev/null
}

# fw_plug HOST VM ID MAC IP SG [nic add flags...]: as plug, in group SG, MTU 1500.
fw_plug() {
	local h=$1 vm=$P-$2 id=$3 mac=$4 ip=$5 sg=$6 tap
	shift 6
	tap=$(bf "$h" nic add --id "$id" --mac "$mac" --vni 42 --ip "$ip" --sg "$sg" --type TAP "$@" | tail -n1) || return 1
	ip -n "$P-$h" link set "$tap" netns "$vm" &&
		ip -n "$vm" link set "$tap" name eth0 &&
		ip -n "$vm" link set eth0 address "$mac" &&
		ip -n "$vm" addr add "$ip/24" dev eth0 &&
		ip -n "$vm" link set eth0 up
}

# setup_fw_bf MODE: butterfly one host, vNICs bypassing filtering, all-open or with 100 rules.
setup_fw_bf() {
	local sg=sg-open flags=()
	mkns vmA && mkns vmB && mkns h1 && lone_underlay h1 && start_bf h1 10.78.0.1 || return 1
	case $1 in
	bypass) flags=(--bypass-filtering) && open_sg h1 ;;
	open) open_sg h1 ;;
	100) sg=sg-100 && fw_bf_rules h1 ;;
	esac || return 1
	fw_plug h1 vmA nic-a 52:54:00:00:00:0a 10.77.0.1 "$sg" "${flags[@]}" &&
		fw_plug h1 vmB nic-b 52:54:00:00:00:0b 10.77.0.2 "$sg" "${flags[@]}"
}
setup_fw_bypass() { setup_fw_bf bypass; }
setup_fw_open() { setup_fw_bf open; }
setup_fw_100() { setup_fw_bf 100; }

# fw_nft_rules FAMILY MODE: the ruleset of the switch namespace.
fw_nft_rules() {
	local i pr po cidr
	echo "table $1 bfw {"
	echo "	chain forward {"
	echo "		type filter hook forward priority 0; policy drop;"
	[ "$1" = bridge ] && echo "		ether type arp accept"
	echo "		ct state established,related accept"
	echo "		ct state invalid drop"
	if [ "$2" = open ]; then
		echo "		ct state new accept"
	else
		for i in $(seq 97); do
			read -r pr po cidr <<<"$(fw_filler "$i")"
			echo "		ip saddr $cidr $pr dport $po accept"
		done
		echo "		ip saddr 10.77.0.1 tcp dport 5201 accept"
		echo "		ip saddr 10.77.0.1 udp dport 5201 accept"
		echo "		ip saddr 10.77.0.1 ip protocol icmp accept"
	fi
	echo "	}"
	echo "}"
}

# fw_nft MODE: load the rules in the switch namespace of setup_k_bridge, bridge family first.
fw_nft() {
	if fw_nft_rules bridge "$1" | nsx sw nft -f - 2>/dev/null; then
		FW_NFT="bridge family"
	else
		nsx sw sysctl -qw net.bridge.bridge-nf-call-iptables=1 &&
			fw_nft_rules inet "$1" | nsx sw nft -f - || return 1
		FW_NFT="inet forward chain through br_netfilter (this kernel has no bridge conntrack)"
	fi
}
setup_k_nft_open() { setup_k_bridge && fw_nft open; }
setup_k_nft_100() { setup_k_bridge && fw_nft 100; }

# fw_run LABEL SETUP: as run_topo, after checking that a TCP connection to port 5202 of vmB
# (no rule allows it in the 100-rule paths; nothing listens there) is refused by vmB or dropped
# on the way (a 1 s timeout): R[LABEL.p5202] says which.
fw_run() {
	local r
	cleanup
	if "$2"; then
		nsx vmA timeout 1 bash -c 'exec 3<>/dev/tcp/10.77.0.2/5202' 2>/dev/null
		r=$?
		R[$1.p5202]=$([ $r = 124 ] && echo dropped || { [ $r = 1 ] && echo refused || echo "exit $r"; })
		measure "$1" vmA vmB 10.77.0.2
	else
		say "RESULT $1 | setup failed"
		r=fail
	fi
	cleanup
	[ "$r" != fail ]
}

# fw_keep LABEL: append this round's TCP and UDP figures of LABEL to its lists.
fw_keep() {
	R[$1.tcpl]+="${R[$1.tcp]:-0} "
	R[$1.udpl]+="${R[$1.udpr]:-0} "
}
# fw_stat LIST: the median of the numbers of LIST, with "(min to max)" when there are several.
fw_stat() {
	tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {
		if (NR == 0) { print "?"; exit }
		m = NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2
		printf "%s", f(m); if (NR > 1) printf " (%s to %s)", f(a[1]), f(a[NR]) }
		function f(v) { return v >= 100 ? sprintf("%.0f", v) : sprintf("%.2f", v) }'
}
fw_med() { fw_stat "$1" | cut -d' ' -f1; }
fw_ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a+0 > 0 && b+0 > 0) printf "%.2f", a/b; else printf "n/a" }'; }

# fw_bench: the firewall section. BENCH_FW_ROUNDS (default 1) repeats the six paths in turn; the
# table then gives medians (and ranges) and the ratios are of medians.
fw_bench() {
	local SECS=${BENCH_SECONDS:-5} UDP_SECS=${BENCH_UDP_SECONDS:-3} PINGS=${BENCH_PINGS:-20}
	local rounds=${BENCH_FW_ROUNDS:-1} paths="fw-bypass fw-open fw-100 k-nofw" r L a b what
	local -A setup=([fw-bypass]=setup_fw_bypass [fw-open]=setup_fw_open [fw-100]=setup_fw_100
		[k-nofw]=setup_k_bridge [k-nft-open]=setup_k_nft_open [k-nft-100]=setup_k_nft_100)
	if ! command -v nft >/dev/null; then
		echo "bench: installing nftables"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables >/dev/null
	fi
	command -v nft >/dev/null && paths+=" k-nft-open k-nft-100"
	say "== firewall: TCP ${SECS}s, UDP ${UDP_SECS}s, ${PINGS} pings per path, ${rounds} round(s)"
	for r in $(seq "$rounds"); do
		for L in $paths; do
			fw_run "$L" "${setup[$L]}" && fw_keep "$L"
		done
	done
	say "== firewall Go benchmarks (one zone, 10,000 flows; ns per packet)"
	gobench firewall-bench ./internal/firewall/
	{
		echo "Firewall run: $(date -u +%FT%TZ), kernel $(uname -r), $(nproc) CPUs; TCP ${SECS} s, UDP ${UDP_SECS} s, ${rounds} round(s) (medians, range in brackets); kernel rules: ${FW_NFT:-not run}."
		echo "Other columns are from the last round."
		echo
		echo "| path | TCP (Gbit/s) | UDP 64 B received (pps) | TCP retransmits | ping avg 0.2 ms apart (ms) | TCP to port 5202 | steal % | load |"
		echo "|---|---|---|---|---|---|---|---|"
		for L in fw-bypass fw-open fw-100 k-nofw k-nft-open k-nft-100; do
			echo "| $L | $(fw_stat "${R[$L.tcpl]:-}") | $(fw_stat "${R[$L.udpl]:-}") | ${R[$L.retr]:-?} | ${R[$L.pbusy]:-?} | ${R[$L.p5202]:-?} | ${R[$L.steal]:-?} | ${R[$L.load]:-?} |"
		done
		echo
		echo "| ratio | TCP | UDP 64 B received |"
		echo "|---|---|---|"
		for pair in "fw-open fw-bypass butterfly all-open / bypass (firewall + anti-spoofing overhead)" \
			"fw-100 fw-bypass butterfly 100 rules / bypass" \
			"k-nft-open k-nofw kernel nftables all-open / no filtering" \
			"k-nft-100 k-nofw kernel nftables 100 rules / no filtering" \
			"fw-open k-nft-open butterfly / kernel, both all-open stateful" \
			"fw-100 k-nft-100 butterfly / kernel, both 100 rules" \
			"fw-bypass k-nofw butterfly / kernel, no filtering"; do
			read -r a b what <<<"$pair"
			echo "| $what | $(fw_ratio "$(fw_med "${R[$a.tcpl]:-}")" "$(fw_med "${R[$b.tcpl]:-}")") | $(fw_ratio "$(fw_med "${R[$a.udpl]:-}")" "$(fw_med "${R[$b.udpl]:-}")") |"
		done
		echo
		echo "Go benchmarks (internal/firewall):"
		echo
		echo '```'
		grep -h '^Benchmark' "$OUT/firewall-bench.txt" 2>/dev/null
		echo '```'
	} >"$OUT/firewall.md"
	echo
	echo "==== firewall ($OUT/firewall.md)"
	cat "$OUT/firewall.md"
}

# ---- vhost section --------------------------------------------------------------------------------
# VM to VM through vhost-user: Butterfly against DPDK's own vhost back end (the C reference), in one
# run, each back end on one core of the two:
#   endpoint  one dpdk-testpmd plays both VMs: virtio_user port 0 is VM A (socket A), port 1 VM B
#             (socket B); forwarding lcore on CPU 0.
#   bf        butterflyd --workers 1 pinned to CPU 1, two VHOST_USER_SERVER vNICs on VNI 42 (A
#             198.18.0.1, B 198.18.0.2) in an all-open security group: anti-spoofing, stateful
#             firewall and learning switch as in production (BENCH_DAEMON_ARGS applies).
#   dpdk      dpdk-testpmd with two net_vhost ports and io forwarding between them, forwarding lcore
#             on CPU 1: DPDK's vhost library, no switching, no filtering.
#   bfx       as bf with both vNICs --bypass-filtering: switching only, like the reference.
# The endpoint runs testpmd's 5tswap mode on each port (it swaps MACs, IPs and UDP ports and sends
# the frame back out of the port it came in on), primed with "start tx_first N" (N bursts per port
# of testpmd's UDP 198.18.0.1:9 -> 198.18.0.2:9, A's to B's MAC and B's to A's). A frame from A
# crosses the back end to B, comes back as B's reply to A, and so on: one UDP flow answered both
# ways, which the firewall admits and the switch learns. B's primed frames claim A's address, so
# bf's firewall drops them; bfx and DPDK forward them. Frames in flight = primed - lost, where lost
# = what the back end received and did not deliver, read once the endpoint stopped.
# The rate is the sum of both ports' Rx-pps (Rx-bps) from the endpoint's "show port stats all"
# over BENCH_VHOST_SECONDS after BENCH_VHOST_WARM seconds: what the back end delivers. Cases:
#   64     64-byte frames, 8 bursts of 32 per port primed: packets per second.
#   1500   1500-byte frames, likewise: Gbit/s.
#   lat    64-byte frames, --burst=1, one burst: one or two frames in flight, so each crossing
#          waits for the previous one; in-flight / Rx-pps is the time of one crossing (back end
#          plus the endpoint's turnaround) with both sides busy-polling: a latency under polling,
#          not a ping through an idle path.
# Without hugepages (--no-huge -m 1024, memfd-backed guest memory); DPDK runtime dirs $P-*.
VH_SECS=${BENCH_VHOST_SECONDS:-10}
VH_WARM=${BENCH_VHOST_WARM:-3}
VH_MA=52:54:00:00:00:1a
VH_MB=52:54:00:00:00:1b
declare -A VH_FD VH_PID
vh_ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a+0 > 0 && b+0 > 0) printf "%.2f", a/b; else printf "n/a" }'; }

# vh_tp NAME LCORES ARGS...: interactive dpdk-testpmd reading commands from the fifo $WORK/NAME.in,
# output in $OUT/vhost-NAME.log; waits for its prompt.
vh_tp() {
	local name=$1 lcores=$2 fifo=$WORK/$1.in fd i
	shift 2
	rm -f "$fifo" && mkfifo "$fifo" || return 1
	stdbuf -o0 dpdk-testpmd --lcores "$lcores" --no-pci --no-huge -m 1024 --file-prefix="$P-$name" \
		--log-level=lib.eal:error "$@" <"$fifo" >"$OUT/vhost-$name.log" 2>&1 &
	VH_PID[$name]=$!
	PIDS+=($!)
	exec {fd}>"$fifo"
	VH_FD[$name]=$fd
	for i in $(seq 300); do
		grep -aq 'testpmd> ' "$OUT/vhost-$name.log" && return 0
		kill -0 "${VH_PID[$name]}" 2>/dev/null || break
		sleep 0.1
	done
	echo "bench: testpmd $name did not start (see $OUT/vhost-$name.log)" >&2
	return 1
}
vh_cmd() { kill -0 "${VH_PID[$1]:-0}" 2>/dev/null && echo "$2" >&"${VH_FD[$1]}"; }
# vh_tp_end NAME: quit testpmd NAME (SIGKILL to its PID after 5 s) and remove its runtime files.
vh_tp_end() {
	local name=$1 pid=${VH_PID[$1]:-} fd=${VH_FD[$1]:-} i
	[ -n "$pid" ] || return 0
	vh_cmd "$name" quit 2>/dev/null
	for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	exec {fd}>&-
	unset "VH_PID[$name]" "VH_FD[$name]"
	rm -rf "/var/run/dpdk/$P-$name"
}
# vh_stats LOG: "RXPPS RXBPS RXPKTS TXPKTS" summed over the two ports of the last port stats dump.
vh_stats() {
	awk '/RX-packets:/{rx[n%2]=$2} /TX-packets:/{tx[n%2]=$2} /Rx-pps:/{pps[n%2]=$2; bps[n%2]=$4; n++}
		END{printf "%d %d %d %d", pps[0]+pps[1], bps[0]+bps[1], rx[0]+rx[1], tx[0]+tx[1]}' "$1"
}
# vh_wait_dumps LOG N: until LOG holds N port stats blocks (10 s).
vh_wait_dumps() {
	local i
	for i in $(seq 100); do
		[ "$(grep -ac 'Rx-pps' "$1")" -ge "$2" ] && return 0
		sleep 0.1
	done
	return 1
}

# vh_backend bf|dpdk SOCK_A SOCK_B: start the back end with its two sockets.
vh_backend() {
	local i
	case $1 in
	bf | bfx)
		local flags=()
		[ "$1" = bfx ] && flags=(--bypass-filtering)
		mkns h1 && lone_underlay h1 && start_bf h1 10.78.0.1 --workers 1 && open_sg h1 || return 1
		taskset -a -p -c 1 "${DPID[h1]}" >/dev/null || return 1
		VH_SA=$(bf h1 nic add --id vh-a --mac "$VH_MA" --vni 42 --ip 198.18.0.1 --sg sg-open --type VHOST_USER_SERVER "${flags[@]}" | tail -n1) &&
			VH_SB=$(bf h1 nic add --id vh-b --mac "$VH_MB" --vni 42 --ip 198.18.0.2 --sg sg-open --type VHOST_USER_SERVER "${flags[@]}" | tail -n1) || return 1
		;;
	dpdk)
		VH_SA=$WORK/dpdk-a.sock VH_SB=$WORK/dpdk-b.sock
		rm -f "$VH_SA" "$VH_SB"
		vh_tp dpdk 0@0,1@1 --vdev "net_vhost0,iface=$VH_SA,queues=1" --vdev "net_vhost1,iface=$VH_SB,queues=1" \
			-- -i --nb-cores=1 --forward-mode=io --port-topology=paired --total-num-mbufs=32768 || return 1
		vh_cmd dpdk start
		;;
	esac
	for i in $(seq 50); do [ -S "$VH_SA" ] && [ -S "$VH_SB" ] && return 0; sleep 0.1; done
	echo "bench: vhost sockets $VH_SA $VH_SB missing" >&2
	return 1
}

# vh_lost BACKEND: frames the back end lost (see above).
vh_lost() {
	local rx tx pps bps
	case $1 in
	bf | bfx)
		# frames received from the two VMs and not delivered to either (flood copies towards
		# the underlay at start-up are neither)
		{ bf h1 nic counters vh-a; bf h1 nic counters vh-b; } 2>&1 | tee "$OUT/vhost-$L-counters.txt" |
			awk '/^rx packets:/{rx+=$NF} /^tx packets:/{tx+=$NF} END{print (rx > tx ? rx - tx : 0)}'
		;;
	dpdk)
		local before
		before=$(grep -ac 'Rx-pps' "$OUT/vhost-dpdk.log")
		vh_cmd dpdk "show port stats all"
		vh_wait_dumps "$OUT/vhost-dpdk.log" $((before + 2))
		read -r pps bps rx tx <<<"$(vh_stats "$OUT/vhost-dpdk.log")"
		echo $((rx - tx))
		;;
	esac
}

# vh_case LABEL BACKEND LEN BURST BURSTS: one measurement; sets R[LABEL.*].
vh_case() {
	local L=$1 be=$2 len=$3 burst=$4 nb=$5 s0 log pps bps rx tx lost primed
	cleanup
	s0=$(steal_snap)
	primed=$((2 * burst * nb))
	R[$L.pps]=0 R[$L.bps]=0 R[$L.fly]=0 R[$L.hop]=n/a
	if ! vh_backend "$be"; then
		say "RESULT $L | back end $be did not start"
		vh_tp_end dpdk
		cleanup
		return
	fi
	log=$OUT/vhost-ep.log
	if vh_tp ep 0@1,1@0 --vdev "virtio_user0,path=$VH_SA,queues=1,queue_size=1024,mac=$VH_MA" \
		--vdev "virtio_user1,path=$VH_SB,queues=1,queue_size=1024,mac=$VH_MB" \
		-- -i --nb-cores=1 --forward-mode=5tswap --port-topology=loop --eth-peer="0,$VH_MB" --eth-peer="1,$VH_MA" \
		--txpkts="$len" --burst="$burst" --total-num-mbufs=32768; then
		vh_cmd ep "start tx_first $nb"
		sleep "$VH_WARM"
		vh_cmd ep "show port stats all"
		vh_wait_dumps "$log" 2
		sleep "$VH_SECS"
		vh_cmd ep "show port stats all"
		vh_wait_dumps "$log" 4
		read -r pps bps rx tx <<<"$(vh_stats "$log")"
		vh_cmd ep stop # the frames settle in the endpoint's rings before the back end is asked
		sleep 1
		cp "$log" "$OUT/vhost-ep-$L.log"
		lost=$(vh_lost "$be")
		# testpmd's Rx-bps stops at 2^31: bits from the packet rate (frames without FCS, as testpmd counts)
		R[$L.pps]=$pps R[$L.bps]=$((pps * len * 8)) R[$L.fly]=$((primed - ${lost:-0}))
		R[$L.hop]=$(awk -v f="${R[$L.fly]}" -v p="$pps" 'BEGIN{ if (p > 0 && f > 0) printf "%.2f", 1e6*f/p; else print "n/a"}')
	fi
	vh_tp_end ep
	[ "$be" = dpdk ] && cp "$OUT/vhost-dpdk.log" "$OUT/vhost-dpdk-$L.log"
	vh_tp_end dpdk
	R[$L.steal]=$(steal_since "$s0") R[$L.load]=$(load1)
	say "RESULT $L | Rx ${R[$L.pps]} pps, $(awk -v b="${R[$L.bps]}" 'BEGIN{printf "%.3f", b/1e9}') Gbit/s, ${R[$L.fly]} of $primed primed frames in flight, ${R[$L.hop]} us per crossing | steal ${R[$L.steal]}% load ${R[$L.load]}"
	cleanup
}

vhost_bench() {
	command -v dpdk-testpmd >/dev/null || { say "RESULT vhost | dpdk-testpmd missing (apt-get install dpdk)"; return; }
	local r be
	for r in $(seq "${BENCH_VHOST_ROUNDS:-1}"); do
		# each case on every back end back to back, so that all see the same machine load
		for be in dpdk bf bfx; do vh_case "vh-$be-64-$r" "$be" 64 32 8; done
		for be in dpdk bf bfx; do vh_case "vh-$be-1500-$r" "$be" 1500 32 8; done
		for be in dpdk bf bfx; do vh_case "vh-$be-lat-$r" "$be" 64 1 1; done
	done
	{
		echo "vhost-user, $(date -u +%FT%TZ), $(nproc) CPUs; back end on CPU 1, endpoint testpmd (5tswap) on CPU 0;"
		echo "${VH_SECS} s per case after ${VH_WARM} s; no hugepages. Shared machine: compare within a row only."
		echo
		echo "| case | DPDK vhost (testpmd io) | Butterfly, firewall on | ratio | Butterfly, bypass filtering | ratio | frames in flight dpdk / bf / bfx | steal % dpdk / bf / bfx | load dpdk / bf / bfx |"
		echo "|---|---|---|---|---|---|---|---|---|"
		local d b x row vd vb vx
		for r in $(seq "${BENCH_VHOST_ROUNDS:-1}"); do
			for row in "64 Mpps pps 1e6" "1500 Gbit/s bps 1e9" "lat us hop 1"; do
				read -r c unit key div <<<"$row"
				d=vh-dpdk-$c-$r b=vh-bf-$c-$r x=vh-bfx-$c-$r
				vd=$(awk -v x="${R[$d.$key]:-0}" -v q="$div" 'BEGIN{ if (x+0 > 0) printf "%.2f", x/q; else print "n/a"}')
				vb=$(awk -v x="${R[$b.$key]:-0}" -v q="$div" 'BEGIN{ if (x+0 > 0) printf "%.2f", x/q; else print "n/a"}')
				vx=$(awk -v x="${R[$x.$key]:-0}" -v q="$div" 'BEGIN{ if (x+0 > 0) printf "%.2f", x/q; else print "n/a"}')
				echo "| $c: $unit (round $r) | $vd | $vb | $(vh_ratio "$vb" "$vd") | $vx | $(vh_ratio "$vx" "$vd") | ${R[$d.fly]:-?} / ${R[$b.fly]:-?} / ${R[$x.fly]:-?} | ${R[$d.steal]:-?} / ${R[$b.steal]:-?} / ${R[$x.steal]:-?} | ${R[$d.load]:-?} / ${R[$b.load]:-?} / ${R[$x.load]:-?} |"
			done
		done
		echo
		echo "lat: microseconds per crossing of the back end (plus the endpoint's turnaround), lower is better."
	} >"$OUT/vhost.md"
	cat "$OUT/vhost.md"
}

# ---- run ------------------------------------------------------------------------------------------
run_topo() {  # run_topo LABEL SETUP
	cleanup
	if "$2"; then
		measure "$1" vmA vmB 10.77.0.2
	else
		say "RESULT $1 | setup failed"
	fi
	cleanup
}

say "bench: $(date -u +%FT%TZ) kernel $(uname -r), $(nproc) CPUs, TCP ${SECS}s, UDP ${UDP_SECS}s, results in $OUT"
SECTIONS=${*:-paths idle api go}
build_bf || { echo "bench: build failed" >&2; exit 1; }
for section in $SECTIONS; do
	case $section in
	paths)
		run_topo k-bridge setup_k_bridge
		run_topo bf-local setup_bf_local
		run_topo k-vxlan setup_k_vxlan
		run_topo bf-vxlan setup_bf_vxlan
		;;
	idle) idle_cpu ;;
	api) api_bench ;;
	firewall) fw_bench ;;
	go)
		say "== dataplane Go benchmarks (ns per packet)"
		gobench dataplane-bench ./internal/dataplane/...
		say "== API server Go benchmarks"
		gobench apiserver-bench ./internal/apiserver/
		;;
	vhost) vhost_bench ;;
	*) echo "bench: unknown section $section (paths idle api go vhost firewall)" >&2; exit 2 ;;
	esac
done

# ---- markdown --------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0 > 0) printf "%.2f", a/b; else printf "n/a" }'; }
row() {
	local L=$1
	printf '| %s | %s / %s | %s | %s | %s | %s | %s | %s |\n' "$2" "${R[$L.pmin]:-?}" "${R[$L.pavg]:-?}" "${R[$L.pbusy]:-?}" \
		"${R[$L.tcp]:-?}" "${R[$L.udps]:-?}" "${R[$L.udpr]:-?}" "${R[$L.steal]:-?}" "${R[$L.load]:-?}"
}
{
	echo "Run: $(date -u +%FT%TZ), kernel $(uname -r), $(nproc) CPUs; TCP ${SECS} s, UDP ${UDP_SECS} s, ${PINGS} pings."
	echo
	echo "| path | ping min / avg, 20 ms apart (ms) | ping avg, 0.2 ms apart (ms) | TCP (Gbit/s) | UDP 64 B sent (pps) | UDP 64 B received (pps) | steal % | load |"
	echo "|---|---|---|---|---|---|---|---|"
	row k-bridge "kernel: Linux bridge + veth (one host)"
	row bf-local "butterfly: two TAP vNICs, one daemon"
	row k-vxlan "kernel: bridge + vxlan, two hosts"
	row bf-vxlan "butterfly: two daemons, VXLAN"
	echo
	echo "| ratio butterfly / kernel | avg latency, 20 ms apart | avg latency, 0.2 ms apart | TCP | UDP 64 B received |"
	echo "|---|---|---|---|---|"
	for pair in "bf-local k-bridge one host" "bf-vxlan k-vxlan VXLAN"; do
		read -r b k what <<<"$pair"
		echo "| $what | $(ratio "${R[$b.pavg]:-0}" "${R[$k.pavg]:-0}") | $(ratio "${R[$b.pbusy]:-0}" "${R[$k.pbusy]:-0}") | $(ratio "${R[$b.tcp]:-0}" "${R[$k.tcp]:-0}") | $(ratio "${R[$b.udpr]:-0}" "${R[$k.udpr]:-0}") |"
	done
	echo
	echo "Idle butterflyd with 100 TAP vNICs: ${R[idle.cpu]:-?} % of one CPU over ${IDLE_SECS} s (steal ${R[idle.steal]:-?} %, load ${R[idle.load]:-?})."
	echo "Idle butterflyd with 100 TAP + 100 vhost-user vNICs, 2 connected to an idle testpmd: ${R[idlev.cpu]:-?} % of one CPU over ${IDLE_SECS} s (steal ${R[idlev.steal]:-?} %, load ${R[idlev.load]:-?})."
	echo
	echo '```'
	grep -h '^RESULT api' "$OUT/apibench.txt" 2>/dev/null
	grep -h '^Benchmark' "$OUT/dataplane-bench.txt" "$OUT/apiserver-bench.txt" 2>/dev/null
	echo '```'
} >"$MD"
echo
echo "==== markdown ($MD)"
cat "$MD"
