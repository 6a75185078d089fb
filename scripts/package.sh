#!/usr/bin/env bash
# Builds the Debian package of Butterfly with nfpm (a `go tool` of this
# module) and prints the path of the .deb it wrote on its last line.
#
#   scripts/package.sh [OUTDIR]     (default: build/package)
#
# The package holds butterflyd and butterfly in /usr/bin, butterfly-cni in
# /opt/cni/bin when cmd/butterfly-cni exists, the systemd unit
# (dist/butterfly.service), the example configuration as the conffile
# /etc/butterfly/butterflyd.ini, bash, zsh and fish completion of the CLI,
# and man pages rendered from the binaries' --help. The unit is not enabled
# or started: set the VTEP address (ip=) in the INI file first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

out=${1:-build/package}
mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

upstream=$(sed -n 's/^const Version = "\(.*\)"$/\1/p' internal/version/version.go)
[ -n "$upstream" ] || { echo "package.sh: no Version in internal/version/version.go" >&2; exit 1; }
version=${upstream//-/+} # 0.13.0-go -> 0.13.0+go: "-" separates the Debian revision
arch=$(go env GOARCH)
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
date=$(date -u +%F)
pkg=github.com/butterfly-go/butterfly/internal/version
ldflags="-X $pkg.Commit=$commit -X $pkg.Date=$date"

echo "package.sh: building the binaries" >&2
cmds=(./cmd/butterflyd ./cmd/butterfly)
cni=false
if [ -d cmd/butterfly-cni ]; then
	cmds+=(./cmd/butterfly-cni)
	cni=true
fi
go build -trimpath -ldflags "$ldflags" -o "$stage/bin/" "${cmds[@]}"

# Shell completion, from the CLI itself.
mkdir -p "$stage/completion"
for sh in bash zsh fish; do
	"$stage/bin/butterfly" completion "$sh" >"$stage/completion/$sh"
done

# Man pages: the --help text of each binary, unfilled.
man_page() { # name section summary
	local name=$1 section=$2 summary=$3
	{
		printf '.TH %s %s "%s" "butterfly %s" "Butterfly"\n' "${name^^}" "$section" "$date" "$upstream"
		printf '.SH NAME\n%s \\- %s\n' "$name" "$summary"
		printf '.SH DESCRIPTION\n.nf\n'
		"$stage/bin/$name" --help 2>&1 | sed -e 's/\\/\\e/g' -e 's/^\([.'"'"']\)/\\\&\1/'
		printf '.fi\n.SH FILES\n/etc/butterfly/butterflyd.ini, /etc/butterfly/api.key, /var/lib/butterfly/state.json\n'
		printf '.SH SEE ALSO\nbutterflyd(8), butterfly(1), /usr/share/doc/butterfly\n'
	} | gzip -9n >"$stage/$name.$section.gz"
}
man_page butterflyd 8 "Butterfly userspace virtual switch daemon"
man_page butterfly 1 "control a butterflyd virtual switch"

mkdir -p "$stage/scripts"
cat >"$stage/scripts/reload" <<'EOF'
#!/bin/sh
# Lets systemd see the unit that was installed or removed (the unit is not
# enabled: configure /etc/butterfly/butterflyd.ini, then enable it).
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
EOF

cni_entry=""
if $cni; then
	cni_entry="
  - src: $stage/bin/butterfly-cni
    dst: /opt/cni/bin/butterfly-cni
    file_info: {mode: 0755}"
fi

cat >"$stage/nfpm.yaml" <<EOF
name: butterfly
arch: $arch
platform: linux
version: $version
release: "1"
section: net
priority: optional
maintainer: Butterfly developers <butterfly@localhost>
description: |-
  Userspace virtual switch for clouds
  butterflyd connects VMs (vhost-user) and containers (TAP) to VXLAN tenant
  networks, with anti-spoofing and stateful security groups, driven over a
  ZeroMQ/protobuf API compatible with the original Outscale Butterfly;
  butterfly is its command-line client.
homepage: https://github.com/butterfly-go/butterfly
depends:
  - libzmq5
contents:
  - src: $stage/bin/butterflyd
    dst: /usr/bin/butterflyd
    file_info: {mode: 0755}
  - src: $stage/bin/butterfly
    dst: /usr/bin/butterfly
    file_info: {mode: 0755}$cni_entry
  - src: $PWD/dist/butterfly.service
    dst: /lib/systemd/system/butterfly.service
    file_info: {mode: 0644}
  - src: $PWD/dist/butterflyd.ini
    dst: /etc/butterfly/butterflyd.ini
    type: config|noreplace
    file_info: {mode: 0644}
  - src: $stage/completion/bash
    dst: /usr/share/bash-completion/completions/butterfly
    file_info: {mode: 0644}
  - src: $stage/completion/zsh
    dst: /usr/share/zsh/vendor-completions/_butterfly
    file_info: {mode: 0644}
  - src: $stage/completion/fish
    dst: /usr/share/fish/vendor_completions.d/butterfly.fish
    file_info: {mode: 0644}
  - src: $stage/butterflyd.8.gz
    dst: /usr/share/man/man8/butterflyd.8.gz
    file_info: {mode: 0644}
  - src: $stage/butterfly.1.gz
    dst: /usr/share/man/man1/butterfly.1.gz
    file_info: {mode: 0644}
  - src: $PWD/README.md
    dst: /usr/share/doc/butterfly/README.md
    file_info: {mode: 0644}
scripts:
  postinstall: $stage/scripts/reload
  postremove: $stage/scripts/reload
EOF

deb="$out/butterfly_${version}-1_${arch}.deb"
rm -f "$deb"
echo "package.sh: packaging with nfpm" >&2
go tool nfpm package --config "$stage/nfpm.yaml" --packager deb --target "$deb" >&2
echo "$deb"
