#!/bin/sh
# Bad input on flit's command line: each case must end with its documented
# exit status and a clear one-line message, never a crash. None of these
# needs KVM (they fail before a VM exists, or because KVM is made absent).
# usage: test_cli.sh BUILD_DIR
set -u
build=${1:?usage: test_cli.sh BUILD_DIR}
flit="$build/flit"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0

# expect STATUS TEXT -- ARGS...: flit ARGS must exit STATUS and print TEXT.
expect() {
	want=$1 text=$2
	shift 3
	"$flit" "$@" >"$tmp/out" 2>&1
	got=$?
	if [ "$got" -eq "$want" ] && grep -qF -- "$text" "$tmp/out"; then
		pass=$((pass + 1))
		printf 'ok      flit %s -> %s: %s\n' "$*" "$got" "$(head -n 1 "$tmp/out")"
	else
		fail=$((fail + 1))
		printf 'FAILED  flit %s: exit %s (want %s), output:\n' "$*" "$got" "$want"
		sed 's/^/    /' "$tmp/out"
	fi
}

head -c 4096 /dev/urandom >"$tmp/garbage.elf"
head -c 100 "$build/guests/hello.elf" >"$tmp/truncated.elf"
: >"$tmp/empty.elf"
mkdir "$tmp/dir.elf"
long=$(head -c 1100 /dev/zero | tr '\0' 'x')

expect 0 "usage: flit" -- --help
expect 64 "no guest given" --
expect 64 "not a size" -- --guest hello --mem abc
expect 64 "not a size" -- --guest hello --mem -5
expect 64 "at least 4M" -- --guest hello --mem 0
expect 64 "at least 4M" -- --guest hello --mem 3M
expect 64 "multiple of 2M" -- --guest hello --mem 5M
expect 64 "at most 64G" -- --guest hello --mem 1T
expect 64 "not a size" -- --guest hello --mem 99999999999999999999999
expect 64 "from 1 to 32" -- --guest hello --vcpus 0
expect 64 "from 1 to 32" -- --guest hello --vcpus 33
expect 64 "from 1 to 32" -- --guest hello --vcpus two
expect 64 "unknown option --bogus" -- --guest hello --bogus
expect 64 "needs a value" -- --guest hello --mem
expect 64 "must be bitmap or ring" -- --guest hello --dirty-track log
expect 64 "anon, memfd or memsvc://HOST" -- --guest hello --mem-backend file
expect 64 "--transport rdma: one of uring, sync" -- --guest hello --transport rdma
expect 64 "--mode fast: precopy, postcopy, hybrid or memsvc" -- --guest hello --mode fast
expect 64 "--policy nope: one of precopy-default, hybrid-default, hybrid-recent" -- --guest hello --policy nope
expect 64 "--policy postcopy-prefetch is not for mode precopy" -- --guest hello --mode precopy --policy postcopy-prefetch
expect 64 "--policy hybrid-recent is not for mode postcopy" -- --guest hello --policy hybrid-recent --mode postcopy
expect 64 "--net-timeout 0: seconds, 0.1 to 3600" -- --guest hello --net-timeout 0
expect 64 "--recover-timeout -1: seconds, 0 to 86400" -- --guest hello --recover-timeout -1
expect 64 "needs --token-file (the namespace" -- --guest hello --mem-backend memsvc://127.0.0.1/ns
expect 64 "--mem-backend memsvc://127.0.0.1: " -- --guest hello --mem-backend memsvc://127.0.0.1
expect 64 "--mem-backend memsvc://h:99999/x: " -- --guest hello --mem-backend memsvc://h:99999/x
expect 64 "--mem-backend memsvc://h/a/b: " -- --guest hello --mem-backend memsvc://h/a/b
expect 64 "--cache is for --mem-backend memsvc" -- --guest hello --cache 64M
expect 64 "--cache 1k: a size of at least 1M" -- --guest hello --cache 1k
expect 64 "--mode memsvc needs --mem-backend memsvc" -- --guest hello --mode memsvc
expect 64 "--memsvc-timeout x: seconds" -- --guest hello --memsvc-timeout x
expect 64 "--memsvc-cache later: send or writeback" -- --guest hello --memsvc-cache later
expect 64 "seconds from 1" -- --guest hello --timeout 0
expect 64 "guest arguments too long" -- --guest hello "a=$long"
expect 66 "guest 'nosuchguest' not found" -- --guest nosuchguest
expect 66 "not found" -- --guest "$tmp/missing.elf"
expect 66 "is a directory" -- --guest "$tmp/dir.elf"
expect 65 "not an ELF file" -- --guest "$tmp/garbage.elf"
expect 65 "not an ELF file" -- --guest "$tmp/empty.elf"
expect 65 "program headers beyond the end" -- --guest "$tmp/truncated.elf"

# More memory than this machine has (when that is within flit's 64G limit).
host_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
big_g=$(( (host_kib / 1048576 + 2) / 2 * 2 + 2 ))
if [ "$big_g" -le 64 ]; then
	expect 64 "more than this machine's memory" -- --guest hello --mem "${big_g}G"
fi

# KVM absent: a clear error that points at the lab runner.
FLIT_KVM_DEVICE=/nonexistent/kvm expect 69 "tools/flit-lab" -- --guest hello
FLIT_KVM_DEVICE=/dev/null expect 69 "KVM" -- --guest hello

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
