#!/usr/bin/env bash
# Runs every check and test of Butterfly: generated code freshness, gofmt,
# go vet, staticcheck, then all Go tests (root-only tests included when run
# as root, which they need: namespaces, TAP devices, daemons).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH=/usr/local/go/bin:$HOME/go/bin:$PATH

step() { printf '\n=== %s\n' "$*"; }

step "generated protocol code is up to date"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
protoc --plugin=protoc-gen-go="$(go tool -n protoc-gen-go)" --go_out="$tmp" \
	--go_opt=paths=source_relative -I api/protocol api/protocol/*.proto
for f in api/protocol/*.pb.go; do
	diff -u "$f" "$tmp/$(basename "$f")" || { echo "stale generated code: run go generate ./api/protocol" >&2; exit 1; }
done

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
[ -z "$unformatted" ] || { echo "not gofmt-formatted: $unformatted" >&2; exit 1; }

step "go vet"
go vet ./...

step "staticcheck"
command -v staticcheck >/dev/null || go install honnef.co/go/tools/cmd/staticcheck@2025.1.1
staticcheck ./...

if [ "$(id -u)" = 0 ]; then
	step "QEMU test guest (cached in \${BUTTERFLY_GUEST_DIR:-/var/cache/butterfly/guest})"
	./scripts/build-guest.sh
fi

step "go test"
go test -count=1 -timeout 40m ./... 2>&1 | tee "$tmp/test.log"
step "go test -race (control plane and dataplane)"
go test -count=1 -race -timeout 20m ./internal/model/... ./internal/apiv0/... ./internal/apiserver/... \
	./internal/apiclient/... ./internal/state/... ./internal/cli/... ./internal/dataplane/... ./internal/l2/... ./internal/vxlan/... \
	./internal/firewall/... ./internal/port/vhostuser/... ./internal/pcap/...
