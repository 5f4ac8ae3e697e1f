#!/bin/bash
# SPDX-License-Identifier: MIT
# The benchmark harness end to end on its smallest case: bench/run --smoke
# must give a CSV of verified Flit migrations (one per transport), the
# memsvc benchmark's verified migrations, the post-copy policies' verified
# migrations, QEMU runs that verified (the idle
# guest and the busy Linux guest), the comparison, QEMU-KVM and Flit side
# by side in the nested-KVM lab, the reports as JSON and the plots as PNG. No speed is checked here: speeds belong to the benchmark's output.
set -euo pipefail
build=$(cd "$1" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
out=$build/bench-smoke
rm -rf "$out"
FLIT_BUILD=$build "$root/bench/run" --smoke --out "$out"

fail() {
	echo "bench smoke: $*" >&2
	exit 1
}
# One idle 256 MiB migration per transport variant of flit-bench-precopy.
flit_runs=4
rows=$(grep -c '^migration,256,idle,' "$out/flit.csv" || true)
[ "$rows" -eq $flit_runs ] || fail "flit.csv has $rows migration rows, $flit_runs expected"
bad=$(grep '^migration,' "$out/flit.csv" | grep -v ',ok,' || true)
[ -z "$bad" ] || fail "a Flit migration failed: $bad"
grep '^migration,' "$out/flit.csv" | awk -F, '$19 != "yes" {exit 1}' ||
	fail "a Flit destination did not verify"
# Through memsvc (cache sent, cache written back), pre-copy and post-copy at
# 256 and 512 MiB: eight verified
# migrations, and the round-trip floors next to them.
rows=$(grep -c '^migration,\(memsvc\|memsvc-writeback\|precopy\|postcopy\),\(256\|512\),16,.*,ok,.*,yes$' "$out/memsvc.csv" || true)
[ "$rows" -eq 8 ] || fail "memsvc.csv: $rows of 8 verified migrations: $(cat "$out/memsvc.csv")"
grep -q '^limit_rtt_memsvc_read,' "$out/memsvc.csv" || fail "memsvc.csv has no memsvc round trip"
# Every post-copy and hybrid policy, and pre-copy, on the idle guest and a
# 16 MiB hot set: twelve verified migrations, next to the round trip.
rows=$(grep -c '^migration,256,\(idle,0\|hot,16\),.*,ok,.*,yes$' "$out/postcopy.csv" || true)
[ "$rows" -eq 12 ] || fail "postcopy.csv: $rows of 12 verified migrations: $(cat "$out/postcopy.csv")"
grep -q '^limit_rtt_4k,' "$out/postcopy.csv" || fail "postcopy.csv has no round trip"
# QEMU: the idle guest's migration, and the busy Linux guest's (it answered
# verify with bad=0 on the destination); column 14 is verified.
awk -F, '$1 == "qemu" && $4 == 256 && $5 == "idle" && $6 == 2 && $8 == "ok" && $14 == "yes" {f = 1}
	END {exit !f}' "$out/qemu.csv" ||
	fail "QEMU's idle migration did not complete and verify: $(cat "$out/qemu.csv")"
awk -F, '$1 == "qemu" && $4 == 256 && $5 == "hot" && $8 == "ok" && $14 == "yes" &&
	$18 == "linux+dirty" {f = 1} END {exit !f}' "$out/qemu.csv" ||
	fail "QEMU's busy guest did not migrate and verify: $(cat "$out/qemu.csv")"
grep -q '^256,idle,0,precopy,2,yes,.*,ok$' "$out/compare.csv" ||
	fail "no comparison: $(cat "$out/compare.csv")"
# Both on the lab's nested KVM: QEMU-KVM's migration verified and paired.
grep -q '^qemu,.*,kvm,256,idle,2,yes,ok,.*,yes,' "$out/lab-qemu.csv" ||
	fail "QEMU-KVM in the lab: $(tail -n 20 "$out/lab.txt")"
grep -q '^256,idle,0,precopy,2,yes,.*,ok$' "$out/lab-compare.csv" ||
	fail "no like-for-like comparison: $(cat "$out/lab-compare.csv")"
if [ -f "$out/flit.jsonl" ]; then
	python3 -c 'import json, sys
n = sum(1 for line in open(sys.argv[1]) if json.loads(line)["status"] == "completed")
sys.exit(0 if n == int(sys.argv[2]) else 1)' "$out/flit.jsonl" $flit_runs ||
		fail "flit.jsonl: $flit_runs completed reports expected"
fi
python3 -c 'import json, sys
[json.loads(line) for line in open(sys.argv[1])]' "$out/qemu.jsonl" || fail "qemu.jsonl is not JSON lines"
for p in total_ms downtime_ms mb_per_s; do
	[ "$(head -c 4 "$out/$p.png" | od -An -c | tr -d ' ')" = "211PNG" ] || fail "$p.png is not a PNG"
done
if [ -f "$out/flit.jsonl" ]; then
	for n in $(seq $flit_runs); do
		[ "$(head -c 4 "$out/timeline-$n.png" | od -An -c | tr -d ' ')" = "211PNG" ] ||
			fail "timeline-$n.png is not a PNG"
	done
fi
echo "bench smoke: ok ($out)"
