#!/usr/bin/env bash
# pgo.sh: refreshes cmd/butterflyd/default.pgo, the CPU profile the Go
# compiler uses to optimise butterflyd (profile-guided optimisation; `go
# build` picks it up by itself). The profile is butterflyd's own over the
# measured windows of the vhost benchmark (scripts/bench.sh vhost, one
# round of the Butterfly back ends: firewall on, bypass, packed; 64 and
# 1500-byte frames), where the packet path spends its time. Run as root on
# a quiet machine, then commit the new file with the figures it brings
# (BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
dir=$(mktemp -d /tmp/butterfly-pgo.XXXXXX)
trap 'rm -rf "$dir"' EXIT
./scripts/bench.sh -out "$dir/out" -vhost-pprof "$dir/prof" -vhost-rounds 1 -vhost-seconds "${PGO_SECONDS:-10}" \
	-vhost-backends bf,bfx,bf-packed -vhost-cases 64,1500 vhost >"$dir/bench.log" 2>&1 || {
	cat "$dir/bench.log" >&2
	exit 1
}
shopt -s nullglob
profiles=("$dir"/prof/*.pprof)
if ((${#profiles[@]} < 6)); then
	echo "pgo: ${#profiles[@]} profiles of 6 (see the log below)" >&2
	cat "$dir/bench.log" >&2
	exit 1
fi
go tool pprof -proto "${profiles[@]}" >"$dir/merged.pgo"
mv "$dir/merged.pgo" cmd/butterflyd/default.pgo
echo "pgo: cmd/butterflyd/default.pgo from ${#profiles[@]} profiles ($(stat -c %s cmd/butterflyd/default.pgo) bytes)"
