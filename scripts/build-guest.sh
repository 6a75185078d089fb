#!/usr/bin/env bash
# Builds the small QEMU guest used by the vhost-user end-to-end tests
# (test/e2e/qemu_test.go) from Debian packages only, and caches it.
#
# Output, in $BUTTERFLY_GUEST_DIR (default /var/cache/butterfly/guest):
#   vmlinuz       Debian's stock kernel (the package linux-image-amd64 points to)
#   vmlinux       the same kernel uncompressed (ELF): QEMU boots it through the
#                 PVH entry point, about twice as fast as vmlinuz under TCG
#   initramfs.gz  busybox-static, iperf3 and ethtool with their libraries
#                 (all from their .debs), the virtio-net modules and our /init
#   stamp         what the guest was built from
# The guest is rebuilt only when this script's content or the candidate
# version of the kernel package changes. Run as root (it checks the guest's
# userland with chroot); the packages are fetched with apt-get download
# (nothing is installed for the guest).
#
# The guest's /init reads from the kernel command line:
#   bfip=A/N   address of eth0 (the virtio-net NIC)     bfmtu=N  MTU of eth0
#   bfmac=M    expected MAC of eth0 (a mismatch is reported on the console)
# prints "BF-READY ..." on the console (ttyS0) once eth0 is configured, then
# "BF-AGENT-UP" once it serves commands on ttyS1 (the "agent"): each line
# "ID TIMEOUT COMMAND"
# runs COMMAND with sh -c (killed after TIMEOUT seconds) and answers
#   @@BEGIN ID\n <output> \n@@END ID <exit status>\n
set -euo pipefail

OUT=${BUTTERFLY_GUEST_DIR:-/var/cache/butterfly/guest}
SELF=$(readlink -f "$0")
export DEBIAN_FRONTEND=noninteractive

mkdir -p "$OUT"
# One build at a time (tests and people may start this concurrently).
exec 9>"$OUT/.lock"
flock 9

# One apt-cache call (they are slow on a busy machine): the metapackage
# pins the kernel package and its version, "Depends: linux-image-X (= V)".
meta() { apt-cache show --no-all-versions linux-image-amd64 2>/dev/null; }
META=$(meta) || { apt-get update -qq && META=$(meta); }
read -r KPKG KVERSION < <(awk '/^Depends:/{for(i=2;i<=NF;i++) if($i ~ /^linux-image-[0-9]/){v=$(i+2); gsub(/[()]/,"",v); print $i, v; exit}}' <<<"$META")
[ -n "${KPKG:-}" ] && [ -n "${KVERSION:-}" ] || { echo "build-guest: cannot resolve linux-image-amd64" >&2; exit 1; }
STAMP="script=$(sha256sum "$SELF" | cut -d' ' -f1) kernel=$KPKG=$KVERSION"
if [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$STAMP" ] &&
	[ -s "$OUT/vmlinuz" ] && [ -s "$OUT/vmlinux" ] && [ -s "$OUT/initramfs.gz" ]; then
	echo "build-guest: up to date in $OUT ($KPKG $KVERSION)"
	exit 0
fi

for tool in cpio depmod modprobe xz zstd gzip; do
	command -v "$tool" >/dev/null || { echo "build-guest: $tool missing (run scripts/setup.sh)" >&2; exit 1; }
done

T0=$(date +%s)
rm -rf "$OUT"/work.* # left by a killed build (we hold the lock)
WORK=$(mktemp -d "$OUT/work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
USERLAND=(busybox-static iperf3 libiperf0 libsctp1 libssl3 ethtool libmnl0 libc6)
# The work directory is private: download as root, not as _apt.
apt-get download -q -o APT::Sandbox::User=root "$KPKG" "${USERLAND[@]}" >/dev/null

# Kernel and modules.
dpkg-deb -x "$WORK/${KPKG}"_*.deb kx
KVER=$(ls kx/lib/modules)
cp kx/boot/vmlinuz-"$KVER" vmlinuz
# Debian's bzImage holds an xz-compressed ELF: cut it out for PVH boot.
OFF=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' vmlinuz | head -1 | cut -d: -f1)
tail -c +$((OFF + 1)) vmlinuz | xz -dcq >vmlinux 2>/dev/null || true
head -c 4 vmlinux | grep -q ELF || { echo "build-guest: no ELF vmlinux in the kernel image" >&2; exit 1; }

R=$WORK/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,etc,lib/modules}
for p in "${USERLAND[@]}"; do
	dpkg-deb -x "$WORK/${p}"_*.deb "$R"
done
# What the guest does not need: docs, locales, gconv, the libc's helpers.
rm -rf "$R"/usr/share "$R"/usr/lib/x86_64-linux-gnu/gconv "$R"/etc/init.d "$R"/usr/libexec \
	"$R"/usr/lib/x86_64-linux-gnu/engines-3 "$R"/usr/lib/x86_64-linux-gnu/ossl-modules "$R"/sbin/ldconfig
# The userland must run as it is: try it here (same architecture).
chroot "$R" /usr/bin/iperf3 --version >/dev/null
chroot "$R" /sbin/ethtool --version >/dev/null
chroot "$R" /bin/busybox true

# virtio-net over PCI and its dependencies, in load order (modprobe works
# out the order from the package's modules once depmod has indexed them).
depmod -b kx "$KVER"
: >"$R"/lib/modules/order
for m in virtio_pci virtio_net; do modprobe -d kx -S "$KVER" --show-depends "$m"; done | awk '$1=="insmod"{print $2}' |
	while read -r f; do
		m=$(basename "$f"); m=${m%%.ko*}
		grep -qx "$m" "$R"/lib/modules/order && continue
		case "$f" in
		*.xz) xz -dc "$f" >"$R/lib/modules/$m.ko" ;;
		*.zst) zstd -qdc "$f" >"$R/lib/modules/$m.ko" ;;
		*) cp "$f" "$R/lib/modules/$m.ko" ;;
		esac
		echo "$m" >>"$R"/lib/modules/order
	done
grep -qx virtio_net "$R"/lib/modules/order || { echo "build-guest: virtio_net module not found" >&2; exit 1; }

cat >"$R"/init <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/usr/bin:/usr/sbin:/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/order); do
	insmod /lib/modules/$m.ko || echo "BF-INSMOD-FAILED $m"
done
bfip=""; bfmtu=""; bfmac=""
for kv in $(cat /proc/cmdline); do
	case "$kv" in
	bfip=*) bfip=${kv#bfip=} ;;
	bfmtu=*) bfmtu=${kv#bfmtu=} ;;
	bfmac=*) bfmac=${kv#bfmac=} ;;
	esac
done
ip link set lo up
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
if [ -e /sys/class/net/eth0 ]; then
	mac=$(cat /sys/class/net/eth0/address)
	[ -z "$bfmac" ] || [ "$mac" = "$bfmac" ] || echo "BF-MAC-MISMATCH eth0=$mac want=$bfmac"
	[ -z "$bfmtu" ] || ip link set eth0 mtu "$bfmtu"
	[ -z "$bfip" ] || ip addr add "$bfip" dev eth0
	ip link set eth0 up
	echo "BF-READY uptime=$(cut -d' ' -f1 /proc/uptime) eth0=$mac mtu=$(cat /sys/class/net/eth0/mtu)"
else
	echo "BF-NO-ETH0"
fi
# The agent: one command at a time from ttyS1, output framed by markers.
# The UART drops what arrives before the port is open: announce the agent
# only once it is open and in raw mode.
exec 3<>/dev/ttyS1
stty 115200 raw -echo <&3
echo "BF-AGENT-UP"
while IFS= read -r line <&3; do
	id=${line%% *}; rest=${line#* }; to=${rest%% *}; cmd=${rest#* }
	printf '\n@@BEGIN %s\n' "$id" >&3
	timeout -s KILL "$to" sh -c "$cmd" </dev/null >&3 2>&1
	printf '\n@@END %s %s\n' "$id" "$?" >&3
done
echo "BF-AGENT-EXITED"
poweroff -f
EOF
chmod 755 "$R"/init
(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -6) >initramfs.gz

# Publish atomically enough for readers that check the stamp last.
rm -f "$OUT/stamp"
mv vmlinuz vmlinux initramfs.gz "$OUT"/
echo "$STAMP" >"$OUT/stamp"
echo "build-guest: built $OUT ($KPKG $KVERSION, kernel $KVER, modules: $(tr '\n' ' ' <"$R"/lib/modules/order)," \
	"initramfs $(du -k "$OUT/initramfs.gz" | cut -f1) KiB) in $(($(date +%s) - T0)) s"
