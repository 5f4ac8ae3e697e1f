#!/bin/sh
# Live migration on one machine: a destination flit waits on loopback, a
# source flit starts the memcheck guest (busy: it keeps rewriting a working
# set), migrates it after a second and prints the report; the destination
# lets the guest run on, then has it verify every page, and checks every
# page again from the host side. POSIX sh: it also runs inside the lab.
# usage: demo-migrate.sh BUILD_DIR [MEM] [PORT]
set -eu
build=$1
# Inside the lab everything is emulated (~60 MiB/s over loopback): smaller.
if [ -n "${FLIT_IN_LAB:-}" ]; then mem=${2:-256M}; else mem=${2:-1G}; fi
port=${3:-7000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$tmp/token"
echo >>"$tmp/token"

"$build/flit" --incoming "tcp:127.0.0.1:$port" --token-file "$tmp/token" --verify \
	--mem "$mem" --vcpus 2 \
	--finish-after 2 --timeout 300 >"$tmp/dest.log" 2>&1 &
dest=$!
# The source connects once the destination listens (it logs that).
for _ in $(seq 100); do
	grep -q "listening for a migration" "$tmp/dest.log" 2>/dev/null && break
	sleep 0.1
done
echo "== source: memcheck, $mem, 2 vCPUs, 16 MiB working set; migrating after 1 s"
src=0
"$build/flit" --guest memcheck --mem "$mem" --vcpus 2 rounds=0 ws=16m \
	--migrate-to "tcp:127.0.0.1:$port" --token-file "$tmp/token" --migrate-after 1 || src=$?
dst=0
wait "$dest" || dst=$?
echo "== destination"
cat "$tmp/dest.log"
echo "== source exit $src, destination exit $dst"
[ "$src" -eq 0 ] && [ "$dst" -eq 0 ]
