#!/usr/bin/env bash
# demo.sh: Butterfly in one command (run as root on Debian 12).
#
# Builds butterflyd and the butterfly CLI, then on this machine only:
#   - two "hosts" (network namespaces bfdemo-h1, bfdemo-h2) joined by a veth underlay
#     (10.78.0.1 <-> 10.78.0.2), one butterflyd in each, VXLAN flooding over multicast;
#   - six "VMs" (namespaces bfdemo-vm1..6) holding TAP vNICs created by the daemons, all
#     addressed in the same subnet 42.0.0.0/24 but spread over three virtual networks:
#
#        host h1                     host h2
#        vm1 42.0.0.1  VNI 42        vm4 42.0.0.4  VNI 42
#        vm2 42.0.0.2  VNI 42        vm5 42.0.0.5  VNI 51
#        vm3 42.0.0.3  VNI 1337      vm6 42.0.0.6  VNI 1337
#
# It pings every VM from every other VM and prints the reachability table: only VMs of the
# same VNI reach each other (within a host and across hosts), whatever their addresses. Then
# it shows `butterfly status` and `butterfly nic list` and removes everything it created
# (also on failure or Ctrl-C). Exit status 0 means every ping matched the expectation.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

P=bfdemo
RUN=/tmp/butterfly-demo   # pid files, sockets, state, logs of this demo only

[ "$(id -u)" = 0 ] || { echo "demo.sh: run me as root (namespaces and TAP devices need it)" >&2; exit 1; }

# ---- dependencies ---------------------------------------------------------------------------
# Go first (setup.sh needs it too), then the Debian packages and modules via setup.sh.
if ! command -v go >/dev/null; then
	cat >&2 <<'EOF'
demo.sh: Go 1.26 or newer is required and was not found (looked in PATH and /usr/local/go/bin).
Install it from https://go.dev/dl/ , for example:
  curl -fsSL https://go.dev/dl/go1.26.0.linux-amd64.tar.gz | tar -C /usr/local -xz
then run this script again.
EOF
	exit 1
fi
gover=$(go env GOVERSION | sed 's/^go//')
if [ "$(printf '%s\n' 1.26 "$gover" | sort -V | head -1)" != 1.26 ]; then
	echo "demo.sh: Go 1.26 or newer is required; found go$gover ($(command -v go))" >&2
	exit 1
fi
./scripts/setup.sh

# ---- cleanup (also of a previous run that was killed) -----------------------------------------
stop_daemons() {
	local f pid
	for f in "$RUN"/*.pid; do
		[ -e "$f" ] || continue
		pid=$(cat "$f")
		# only a butterflyd this demo started (its binary lives under $RUN)
		if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$RUN/bin/butterflyd" ]; then
			kill "$pid" 2>/dev/null || true
			for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
			kill -9 "$pid" 2>/dev/null || true
		fi
		rm -f "$f"
	done
}
cleanup() {
	stop_daemons
	local n
	for n in h1 h2 vm1 vm2 vm3 vm4 vm5 vm6; do
		ip netns del "$P-$n" 2>/dev/null || true
	done
	rm -rf "$RUN"
}
on_exit() {
	local rc=$?
	trap - EXIT
	if [ $rc -ne 0 ] && [ -d "$RUN" ]; then
		for h in h1 h2; do
			[ -s "$RUN/$h.log" ] && { echo "---- butterflyd $h log (tail) ----"; tail -n 20 "$RUN/$h.log"; }
		done
	fi
	echo "==> cleaning up"
	cleanup
	exit $rc
}
cleanup
trap on_exit EXIT
trap 'exit 130' INT TERM
mkdir -p "$RUN/bin"

echo "==> building butterflyd and butterfly"
go build -o "$RUN/bin/butterflyd" ./cmd/butterflyd
go build -o "$RUN/bin/butterfly" ./cmd/butterfly
D=$RUN/bin/butterflyd
C=$RUN/bin/butterfly

# ---- hosts ----------------------------------------------------------------------------------------
echo "==> two hosts joined by a veth underlay"
for h in h1 h2; do ip netns add "$P-$h"; ip -n "$P-$h" link set lo up; done
ip -n "$P-h1" link add ul type veth peer name ul netns "$P-h2"
for i in 1 2; do
	ip -n "$P-h$i" addr add "10.78.0.$i/24" dev ul
	ip -n "$P-h$i" link set ul up
	ip -n "$P-h$i" route add 224.0.0.0/4 dev ul   # VXLAN flooding groups
done

declare -A EP
# Both daemons create (the first one) and require the API key in $KEY, as
# they would /etc/butterfly/api.key by default; the CLI is given it with -k.
KEY=$RUN/api.key
for i in 1 2; do
	h=h$i
	mkdir -p "$RUN/$h"
	EP[$h]="ipc://$RUN/$h/api"
	ip netns exec "$P-$h" "$D" --ip "10.78.0.$i" --endpoint "${EP[$h]}" --socket-dir "$RUN/$h" \
		--state-file "$RUN/$h/state.json" --trace-dir "$RUN/trace" --auto-key "$KEY" \
		--no-syslog --log-level info >"$RUN/$h.log" 2>&1 &
	echo $! >"$RUN/$h.pid"
done
for h in h1 h2; do
	ok=
	for _ in $(seq 100); do
		if "$C" -e "${EP[$h]}" -k "$KEY" status >/dev/null 2>&1; then ok=1; break; fi
		kill -0 "$(cat "$RUN/$h.pid")" 2>/dev/null || break
		sleep 0.1
	done
	[ -n "$ok" ] || { echo "butterflyd on $h did not start" >&2; exit 1; }
	echo "    butterflyd on $h: pid $(cat "$RUN/$h.pid"), API ${EP[$h]}"
done
bf() { local h=$1; shift; "$C" -e "${EP[$h]}" -k "$KEY" "$@"; }

# ---- security group and vNICs -------------------------------------------------------------------
echo "==> security group sg-open (everything allowed) on both hosts"
for h in h1 h2; do
	bf $h sg rule add sg-open --ip-proto all --cidr 0.0.0.0/0 >/dev/null
	bf $h sg rule add sg-open --ip-proto all --cidr ::/0 >/dev/null
done

#        vm  host VNI
VMS=("1 h1 42" "2 h1 42" "3 h1 1337" "4 h2 42" "5 h2 51" "6 h2 1337")
declare -A VNI HOST
echo "==> six vNICs (TAP) moved into six VM namespaces"
for spec in "${VMS[@]}"; do
	read -r n h vni <<<"$spec"
	VNI[$n]=$vni HOST[$n]=$h
	mac=52:54:00:12:34:0$n
	tap=$(bf $h nic add --id "nic-$n" --mac "$mac" --vni "$vni" --ip "42.0.0.$n" --sg sg-open --type TAP | tail -n1)
	vm=$P-vm$n
	ip netns add "$vm"
	ip -n "$vm" link set lo up
	ip -n "$P-$h" link set "$tap" netns "$vm"
	ip -n "$vm" link set "$tap" name eth0
	ip -n "$vm" link set eth0 address "$mac" mtu 1400 up   # 1400 leaves room for VXLAN
	ip -n "$vm" addr add "42.0.0.$n/24" dev eth0
	printf '    vm%s on %s: nic-%s, TAP %s, VNI %-4s 42.0.0.%s\n' "$n" "$h" "$n" "$tap" "$vni" "$n"
done

# ---- reachability ------------------------------------------------------------------------------
echo "==> pinging every VM from every other VM"
ping_pair() {   # ping_pair FROM TO EXPECT -> writes OK or blocked to $RUN/p-FROM-TO
	local from=$1 to=$2 expect=$3 tries=1 res=blocked
	[ "$expect" = OK ] && tries=10   # the first pings of a pair may need ARP and learning
	for _ in $(seq $tries); do
		if ip netns exec "$P-vm$from" ping -n -c1 -W1 "42.0.0.$to" >/dev/null 2>&1; then res=OK; break; fi
	done
	if [ "$res" = blocked ] && [ "$expect" = blocked ]; then
		# one lost ping proves little: try twice more
		ip netns exec "$P-vm$from" ping -n -c2 -i0.3 -W1 "42.0.0.$to" >/dev/null 2>&1 && res=OK
	fi
	echo "$res" >"$RUN/p-$from-$to"
}
jobs_=()
for a in 1 2 3 4 5 6; do
	for b in 1 2 3 4 5 6; do
		[ $a = $b ] && continue
		exp=blocked
		[ "${VNI[$a]}" = "${VNI[$b]}" ] && exp=OK
		ping_pair $a $b $exp &
		jobs_+=($!)
	done
done
wait "${jobs_[@]}"   # the pings only: the daemons are background jobs too

fail=0
printf '\n%-16s' "from \\ to"
for b in 1 2 3 4 5 6; do printf '%-10s' "vm$b"; done
printf '\n%-16s' ""
for b in 1 2 3 4 5 6; do printf '%-10s' "${HOST[$b]}/${VNI[$b]}"; done
echo
for a in 1 2 3 4 5 6; do
	printf '%-16s' "vm$a ${HOST[$a]}/${VNI[$a]}"
	for b in 1 2 3 4 5 6; do
		if [ $a = $b ]; then printf '%-10s' "-"; continue; fi
		got=$(cat "$RUN/p-$a-$b")
		exp=blocked
		[ "${VNI[$a]}" = "${VNI[$b]}" ] && exp=OK
		cell=$got
		if [ "$got" != "$exp" ]; then cell="$got(!)"; fail=1; fi
		printf '%-10s' "$cell"
	done
	echo
done
echo
if [ $fail = 0 ]; then
	echo "==> as expected: VMs reach each other only within their VNI, on one host and across hosts"
else
	echo "==> UNEXPECTED results are marked (!)" >&2
fi

echo
echo "==> butterfly -e ${EP[h1]} -k $KEY nic list"
bf h1 nic list
echo
echo "==> butterfly -e ${EP[h1]} -k $KEY status"
bf h1 status
echo
exit $fail
