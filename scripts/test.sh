#!/usr/bin/env bash
# Runs every check and test of Butterfly: generated code freshness, gofmt,
# go mod tidy, go vet, staticcheck, dead code, then all Go tests (root-only tests included when run
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

step "go mod tidy"
go mod tidy -diff

step "go vet"
go vet ./...

step "staticcheck"
# v0.6.1 is staticcheck 2025.1.1 (the module proxy serves it under this name).
command -v staticcheck >/dev/null || go install honnef.co/go/tools/cmd/staticcheck@v0.6.1
staticcheck ./...

step "dead code"
command -v deadcode >/dev/null || go install golang.org/x/tools/cmd/deadcode@v0.52.0
# Nothing may be unreachable even from the tests (examples are run by go test).
deadcode -test ./... >"$tmp/dead"
dead=$(grep -v ': unreachable func: Example' "$tmp/dead" || true)
[ -z "$dead" ] || { printf 'dead code, reached by nothing:\n%s\n' "$dead" >&2; exit 1; }
# Nothing outside test-support packages (import paths ending in "test") may
# be reached only by tests, but for the reviewed entries of
# scripts/deadcode-allow.txt. Generated code is not reported.
deadcode -f '{{range .Funcs}}{{$.Path}} {{.Name}}{{"\n"}}{{end}}' ./... >"$tmp/testonly.raw"
sed "s|^$(go list -m)/||" "$tmp/testonly.raw" | { grep -v '^[^ ]*test ' || true; } >"$tmp/testonly"
{ grep -v '^#' scripts/deadcode-allow.txt | grep . || true; } >"$tmp/allow"
only=$(grep -vxF -f "$tmp/allow" "$tmp/testonly" || true)
[ -s "$tmp/allow" ] || only=$(cat "$tmp/testonly")
[ -z "$only" ] || { printf 'reached only by tests (remove, or make the daemon use it):\n%s\n' "$only" >&2; exit 1; }
stale=$(grep -vxF -f "$tmp/testonly" "$tmp/allow" || true)
[ -s "$tmp/testonly" ] || stale=$(cat "$tmp/allow")
[ -z "$stale" ] || printf 'warning: scripts/deadcode-allow.txt lists live or removed functions (delete these lines):\n%s\n' "$stale" >&2

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
