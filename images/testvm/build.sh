#!/usr/bin/env bash
# Builds cork's test VM from Debian packages and this repository only:
#   OUT/vmlinux         Debian's kernel, uncompressed (boots ~3 s faster under TCG)
#   OUT/base-oci        the agent image: busybox, the checks, users root and node
#                       (uid 1000, also in group agents), as an OCI layout, no corkd
#   OUT/baked-oci       the same image after cork bake added corkd
#   OUT/initramfs.cpio  baked-oci flattened, plus the vsock and virtio-serial modules
# So the VM proves that a baked image runs corkd in a real kernel. The kernel
# package is downloaded with apt-get download and unpacked with dpkg-deb,
# never installed. Needs: apt, dpkg-deb, xz, busybox-static, go.
#
# usage: images/testvm/build.sh OUT CORKD
set -euo pipefail
out=$1 corkd=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/cache" "$out/stage"

# The kernel's package name changes with security updates: resolve it
# through the linux-image-amd64 metapackage.
pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
	echo "build.sh: cannot resolve linux-image-amd64 to a kernel package (run apt-get update)" >&2
	exit 1
fi
kdir=$out/cache/$pkg
if [ ! -s "$kdir/vmlinux" ]; then
	rm -rf "$kdir"
	mkdir -p "$kdir"
	(cd "$kdir" && apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
	deb=$(ls "$kdir"/*.deb)
	dpkg-deb -x "$deb" "$kdir/x"
	vmlinuz=$(ls "$kdir"/x/boot/vmlinuz-*)
	# The bzImage holds an xz stream: everything from its magic on.
	# xz stops at the stream's end and tail is cut off: no pipefail here;
	# the result is checked for an ELF header instead.
	off=$(set +o pipefail; LC_ALL=C grep -m1 -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -1 | cut -d: -f1)
	(set +o pipefail; tail -c +$((off + 1)) "$vmlinuz" | xz -dc --single-stream >"$kdir/vmlinux.tmp")
	if [ "$(head -c 4 "$kdir/vmlinux.tmp" | od -An -c | tr -d ' ')" != '177ELF' ]; then
		echo "build.sh: no ELF kernel in $vmlinuz's xz stream" >&2
		exit 1
	fi
	mkdir -p "$kdir/modules"
	for m in $(cat "$here/modules"); do
		f=$(find "$kdir/x/lib/modules" -name "$m.ko" | head -1)
		[ -n "$f" ] || { echo "build.sh: module $m not in $pkg" >&2; exit 1; }
		cp "$f" "$kdir/modules/"
	done
	rm -rf "$kdir/x" "$deb"
	mv "$kdir/vmlinux.tmp" "$kdir/vmlinux"
fi
cp "$kdir/vmlinux" "$out/vmlinux"

stage=$out/stage
CGO_ENABLED=0 go build -trimpath -o "$stage/" ./images/testvm/vmcheck ./host/e2e/probe
cat >"$stage/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
node:x:1000:1000:node:/home/node:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$stage/group" <<'GROUP'
root:x:0:
tty:x:5:
node:x:1000:
agents:x:1001:node
nogroup:x:65534:
GROUP

{
	for d in /bin /dev /proc /sys /tmp /run /etc /root /usr /usr/local /usr/local/bin /home; do
		echo "dir $d 0755 0 0"
	done
	echo "dir /home/node 0755 1000 1000"
	echo "file /init $here/init 0755 0 0"
	echo "file /bin/busybox $(command -v busybox) 0755 0 0"
	echo "file /usr/local/bin/vmcheck $stage/vmcheck 0755 0 0"
	echo "file /usr/local/bin/probe $stage/probe 0755 0 0"
	echo "file /etc/passwd $stage/passwd 0644 0 0"
	echo "file /etc/group $stage/group 0644 0 0"
} >"$stage/base.list"
rm -rf "$out/base-oci" "$out/baked-oci"
go run ./images/testvm/mkbase -o "$out/base-oci" <"$stage/base.list"
go run ./host/cmd/cork bake --agent "$corkd" "$out/base-oci" "$out/baked-oci"

# What belongs to the VM rather than the image: the console and the modules.
{
	echo "dir /dev 0755 0 0"
	echo "nod /dev/console 0600 0 0 c 5 1"
	echo "dir /lib 0755 0 0"
	echo "dir /lib/modules 0755 0 0"
	for f in "$kdir"/modules/*.ko; do
		echo "file /lib/modules/${f##*/} $f 0644 0 0"
	done
	echo "file /lib/modules/load-order $here/modules 0644 0 0"
} >"$stage/vm.list"
go run ./images/testvm/mkinitramfs -oci "$out/baked-oci" -o "$out/initramfs.cpio" <"$stage/vm.list"
echo "test VM: $out/vmlinux $out/initramfs.cpio ($pkg, image $out/baked-oci)"
