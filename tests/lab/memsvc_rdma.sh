#!/bin/sh
# SPDX-License-Identifier: MIT
# memsvc over real RDMA: soft-RoCE (rdma_rxe on a dummy netdev) inside the
# nested lab, then tests/lab/test_memsvc_rdma_lab.c against flit-memsvc
# --rdma. Fails (never skips) when soft-RoCE cannot be set up.
#
#   tests/lab/memsvc_rdma.sh BUILD_DIR      on the host
#   memsvc_rdma.sh --in-lab TEST_BINARY     what runs inside the lab
set -u
ADDR=10.77.0.1
MODS="crypto/crc32_generic fs/configfs/configfs net/ipv4/udp_tunnel net/ipv6/ip6_udp_tunnel
drivers/infiniband/core/ib_core drivers/infiniband/core/ib_uverbs drivers/infiniband/core/ib_cm
drivers/infiniband/core/iw_cm drivers/infiniband/core/rdma_cm drivers/infiniband/core/rdma_ucm
drivers/infiniband/sw/rxe/rdma_rxe drivers/net/dummy"

fail() {
	echo "memsvc_rdma: $*" >&2
	exit 1
}

if [ "${1:-}" = --in-lab ]; then
	kdir=/lib/modules/$(uname -r)/kernel
	for m in $MODS; do
		name=${m##*/}
		# built in, or loaded already: nothing to do
		[ -d /sys/module/$name ] && continue
		insmod "$kdir/$m.ko" || fail "soft-RoCE setup: insmod $m failed"
	done
	/usr/sbin/ip link add rxed0 type dummy &&
		/usr/sbin/ip addr add $ADDR/24 dev rxed0 &&
		/usr/sbin/ip link set rxed0 up || fail "soft-RoCE setup: dummy netdev failed"
	/usr/bin/rdma link add rxe0 type rxe netdev rxed0 ||
		fail "soft-RoCE setup: rdma link add failed: $(dmesg | grep rxe | tail -3)"
	/usr/bin/rdma link
	FLIT_RDMA_ADDR=$ADDR "$2"
	rc=$?
	if [ $rc != 0 ]; then
		# what the soft-RoCE device saw, for the failure report
		for f in /sys/class/infiniband/rxe0/ports/1/hw_counters/*; do
			echo "rxe0 ${f##*/}: $(cat $f)"
		done
		dmesg | grep -i rxe | tail -5
	fi
	exit $rc
fi

build=$(cd "${1:?usage: memsvc_rdma.sh BUILD_DIR}" && pwd) || exit 2
here=$(cd "$(dirname "$0")" && pwd)
test_bin=$build/tests/test_memsvc_rdma_lab
[ -x "$test_bin" ] || fail "$test_bin is not built"
# The lab's kernel (tools/flit-lab picks the newest with kvm-amd): it must
# also have rdma_rxe, so choose among those and tell flit-lab.
ver=${FLIT_LAB_KERNEL:-}
if [ -z "$ver" ]; then
	for v in $(ls /boot | sed -n 's/^vmlinuz-//p' | sort -V); do
		[ -n "$(find /lib/modules/$v -name 'kvm-amd.ko*' 2>/dev/null)" ] &&
			[ -f /lib/modules/$v/kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko ] && ver=$v
	done
fi
[ -n "$ver" ] || fail "no lab kernel with rdma_rxe (an uncompressed rdma_rxe.ko) in /lib/modules"
files="$here/memsvc_rdma.sh /usr/bin/rdma /usr/sbin/ip /etc/libibverbs.d/rxe.driver"
for m in $MODS; do
	f=/lib/modules/$ver/kernel/$m.ko
	[ -f "$f" ] || fail "$f is missing (soft-RoCE needs it)"
	files="$files $f"
done
# libibverbs opens its provider with dlopen: the lab runner does not see it
prov=$(ls /usr/lib/*/libibverbs/librxe-rdmav*.so 2>/dev/null | head -n 1)
[ -n "$prov" ] || fail "no rdma-core rxe provider (librxe-rdmav*.so); run tools/setup"
files="$files $prov"
FLIT_LAB_KERNEL=$ver FLIT_LAB_FILES="$files" exec "$here/../../tools/flit-lab" --lab \
	--build "$build" --timeout 300 -- "$here/memsvc_rdma.sh" --in-lab "$test_bin"
