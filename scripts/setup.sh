#!/usr/bin/env bash
# Installs what Butterfly needs to build and test on Debian 12 (run as root).
# Idempotent: packages already present are left alone.
set -euo pipefail

pkgs=(libzmq3-dev pkg-config gcc libc6-dev g++ make git ca-certificates etcd-server etcd-client
      python3-zmq python3-protobuf python3-cryptography protobuf-compiler
      iproute2 iputils-ping iperf3 ethtool tcpdump procps busybox-static nftables
      dpdk dpdk-dev librte-net-virtio23 librte-mempool-ring23
      qemu-system-x86 cpio kmod xz-utils zstd)   # QEMU guest tests (scripts/build-guest.sh)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "setup: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

export PATH=/usr/local/go/bin:$HOME/go/bin:$PATH
if ! command -v go >/dev/null; then
	echo "setup: Go 1.26 is required: install it at /usr/local/go (https://go.dev/dl/)" >&2
	exit 1
fi
go mod download
