#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""QEMU as the reference: one migration between two QEMU processes on this
machine over loopback, driven through QMP, its figures read from
query-migrate. Prints one CSV row (the columns of HEADER).

--workload idle (the default): the guest's RAM is a file filled with a
pattern of the page number (no zero pages, as in Flit's memcheck guest), the
source is started paused (-S) and never runs. The destination's RAM is
another file; after the migration it must equal the source's byte for byte,
or the run is reported as failed. Pre-copy only.

--workload hot: a running Linux guest ("linux+dirty"): Debian's kernel
(the newest /boot/vmlinuz-*, or --kernel) and an initramfs whose /init is
bench/qemu-guest/dirty.c, which fills most of the guest's RAM with the
memcheck pattern and rewrites a hot set of --hot MiB round after round at
--rate pages per second per vCPU (0: as fast as it can; 2 vCPUs), keeping
every page's generation. --workload random: the same guest writing --hot
MiB a round at pages picked at random over all of its filled memory
(dirty.c order=random, as Flit's memcheck order=random). It is driven
through its serial console (a unix
socket). After the migration the destination guest must answer `verify`
with bad=0, or the row says failed and carries no time. --mode postcopy
turns on postcopy-ram (and postcopy-preempt where this QEMU has it) and
switches with migrate-start-postcopy once the first round is done (QEMU
10.0 refuses multifd with post-copy: one channel then, the note says so).
The fault latency comes from query-migrate's postcopy-latency-dist where
QEMU has it (10.1 and later); otherwise from the destination's own trace
events (-trace to a file, microsecond timestamps): for every page request
its fault thread sent, the time until that page was placed, which is what
Flit measures too (fault_source says which). Pre-copy that has not converged after
--converge-timeout seconds is cancelled and reported as "no convergence".

QEMU runs under KVM where the host's KVM can run it, under TCG otherwise
(the accel column says which).

usage: qemu_ref.py --mem MIB --channels N [--prealloc] [--accel tcg|kvm]
                   [--workload idle|hot|random --hot MIB --rate PPS]
                   [--mode precopy|postcopy] [--port P] [--header] [--json FILE]
"""
import argparse
import glob
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time

HEADER = ("vmm,version,accel,ram_mib,workload,channels,dest_prealloc,status,"
          "total_ms,downtime_ms,setup_ms,bytes,mb_per_s,verified,"
          "hot_mib,rate_pps,mode,guest,rounds,preempt,postcopy_requests,faults,"
          "fault_p50_us,fault_p99_us,fault_mean_us,fault_source,guest_rate_pps,"
          "guest_stall_ms,note")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def unix_connect(path, timeout):
    """A connected unix socket to path, retried until QEMU has made it."""
    end = time.time() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.time() > end:
                raise
            time.sleep(0.05)


class Qmp:
    """A QMP client: one command, one reply; events are skipped."""

    def __init__(self, path, timeout=60):
        self.s = unix_connect(path, timeout)
        self.f = self.s.makefile("rw")
        self.greeting = json.loads(self.f.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg) + "\n")
        self.f.flush()
        while True:
            line = self.f.readline()
            if not line:
                raise RuntimeError(f"QMP closed during {name}")
            reply = json.loads(line)
            if "event" in reply:
                continue
            if "error" in reply:
                raise RuntimeError(f"{name}: {reply['error'].get('desc')}")
            return reply.get("return")


class Console:
    """The busy guest's serial console (a unix socket chardev): commands
    out, its "DIRTY ..." answer lines in."""

    def __init__(self, path, timeout=60):
        self.s = unix_connect(path, timeout)
        self.buf = b""

    def send(self, line):
        self.s.sendall(line.encode() + b"\n")

    def wait(self, prefix, timeout):
        """The first line starting with prefix, within timeout seconds."""
        end = time.time() + timeout
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                text = line.decode(errors="replace").strip("\r\n ")
                if text.startswith(prefix):
                    return text
            left = end - time.time()
            if left <= 0:
                raise RuntimeError(f"the guest did not say '{prefix}' in {timeout} s")
            self.s.settimeout(left)
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise RuntimeError(f"the guest's console closed before '{prefix}'")
            self.buf += chunk

    def ask(self, cmd, prefix, timeout=60):
        self.send(cmd)
        return self.wait(prefix, timeout)

    def close(self):
        self.s.close()


def fields(line):
    """key=value words of a guest line, as a dict of strings."""
    return dict(w.split("=", 1) for w in line.split() if "=" in w)


def log2_buckets(counts):
    """QEMU's postcopy-latency-dist (bucket N counts faults of [2^N, 2^(N+1))
    microseconds) as [(lo, hi, count)] in microseconds."""
    return [(1 << n, 1 << (n + 1), c) for n, c in enumerate(counts) if c]


def hist_percentile(buckets, p, top=None):
    """The p-th percentile (0-100) of a histogram [(lo, hi, count)], linear
    within a bucket. top: only the `top` largest values count (the part of a
    bucket that is kept is its upper part). None for an empty histogram."""
    b = sorted((lo, hi, c) for lo, hi, c in buckets if c > 0)
    if top is not None:
        kept, left = [], top
        for lo, hi, c in reversed(b):
            if left <= 0:
                break
            if c > left:
                lo, c = hi - (hi - lo) * left / c, left
            kept.append((lo, hi, c))
            left -= c
        b = list(reversed(kept))
    n = sum(c for _, _, c in b)
    if n == 0:
        return None
    rank = p / 100 * n
    seen = 0
    for lo, hi, c in b:
        if seen + c >= rank:
            return lo + (hi - lo) * max(rank - seen, 0) / c
        seen += c
    return b[-1][1]


def percentile(values, p):
    """The p-th percentile (0-100) of a list, nearest rank; None if empty."""
    v = sorted(values)
    if not v:
        return None
    return v[max(0, min(len(v) - 1, -(-len(v) * p // 100) - 1))]


TRACE_EVENTS = ("postcopy_ram_fault_thread_request", "postcopy_place_page",
                "postcopy_place_page_zero")
TRACE_LINE = re.compile(r"^\d+@(\d+)\.(\d+):(\w+) (.*)$")


def fault_latencies(lines):
    """Microseconds from each page request the destination's fault thread
    sent (postcopy_ram_fault_thread_request HVA=...) until that page was
    placed (postcopy_place_page[_zero] host=...), from a QEMU trace log with
    timestamps (-msg timestamp=on). A request whose page never shows up as
    placed after it is left out."""
    waiting, out = {}, []
    for line in lines:
        m = TRACE_LINE.match(line.strip())
        if not m:
            continue
        t = int(m.group(1)) * 1000000 + int(m.group(2))
        ev, rest = m.group(3), m.group(4)
        if ev == "postcopy_ram_fault_thread_request":
            a = re.search(r"HVA=(0x[0-9a-f]+)", rest)
            if a:
                waiting.setdefault(int(a.group(1), 16) & ~0xfff, []).append(t)
        elif ev in ("postcopy_place_page", "postcopy_place_page_zero"):
            a = re.search(r"host=(0x[0-9a-f]+)", rest)
            if a:
                for t0 in waiting.pop(int(a.group(1), 16) & ~0xfff, []):
                    out.append(t - t0)
    return out


def fill(path, mib):
    """Page i holds the 64-bit value i + 1, repeated."""
    with open(path, "wb") as f:
        for i in range(mib * 256):
            f.write(struct.pack("<Q", i + 1) * 512)


def same_files(a, b, mib):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for _ in range(mib):
            if fa.read(1 << 20) != fb.read(1 << 20):
                return False
    return True


def write_cpio(path, files):
    """An uncompressed newc initramfs of regular files {name: bytes}, 0755."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate(
            [(n, 0o100755, d) for n, d in files.items()] + [("TRAILER!!!", 0, b"")], 1):
        nb = name.encode() + b"\0"
        head = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0)
        out += b"070701" + "".join(f"{v:08x}" for v in head).encode() + nb
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    with open(path, "wb") as f:
        f.write(out)


def find_kernel(given):
    """--kernel, else the newest /boot/vmlinuz-<ver> (as the lab picks)."""
    if given:
        return given
    found = [f for f in glob.glob("/boot/vmlinuz-*") if os.access(f, os.R_OK)]
    if not found:
        raise RuntimeError("no /boot/vmlinuz-*: install linux-image-amd64 (tools/setup)")

    def ver(f):
        return [int(x) if x.isdigit() else x
                for x in re.split(r"(\d+)", f[len("/boot/vmlinuz-"):])]
    return sorted(found, key=ver)[-1]


def guest_init(given, tmp):
    """The static /init: --guest-init, the build's, or compiled here."""
    for f in (given, os.path.join(os.environ.get("FLIT_BUILD", os.path.join(ROOT, "build")),
                                  "bench", "flit-qemu-guest-init")):
        if f and os.path.isfile(f):
            return f
    out = os.path.join(tmp, "init")
    subprocess.run(["gcc", "-static", "-O2", "-pthread", "-D_GNU_SOURCE", "-I", ROOT,
                    os.path.join(ROOT, "bench", "qemu-guest", "dirty.c"), "-o", out], check=True)
    return out


def guest_fill_mib(mib):
    """What the guest fills: its RAM less what the kernel needs."""
    return max(16, mib - max(128, mib * 3 // 16))


def qemu(tmp, name, mib, accel, mem_path, prealloc, extra, smp=1):
    sock = os.path.join(tmp, name + ".qmp")
    pre = "on" if prealloc else "off"
    if mem_path:
        backend = (f"memory-backend-file,id=ram0,size={mib}M,mem-path={mem_path},"
                   f"share=on,prealloc={pre}")
    else:
        backend = f"memory-backend-ram,id=ram0,size={mib}M,prealloc={pre}"
    args = ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
            "-accel", accel, "-machine", "q35,memory-backend=ram0", "-m", f"{mib}M",
            "-smp", str(smp), "-object", backend,
            "-qmp", f"unix:{sock},server=on,wait=off"] + extra
    log = open(os.path.join(tmp, name + ".log"), "w")
    proc = subprocess.Popen(args, stdout=log, stderr=log)
    return proc, sock


def version():
    out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True)
    return out.stdout.split("\n")[0].split("version ")[-1].split(" ")[0]


def setup_caps(a, dq, sq, row):
    """multifd with --channels, and for post-copy postcopy-ram (+ preempt
    where QEMU has it; blocktime on the destination for its own figures).
    Where this QEMU refuses multifd with post-copy, post-copy goes without."""
    have = {c["capability"] for c in sq.cmd("query-migrate-capabilities")}
    caps = {"multifd": True}
    if a.mode == "postcopy":
        caps["postcopy-ram"] = True
        if "postcopy-preempt" in have and not a.no_preempt:
            caps["postcopy-preempt"] = True
        row["preempt"] = "yes" if caps.get("postcopy-preempt") else "no"
    for attempt in (1, 2):
        try:
            for q in (dq, sq):
                q.cmd("migrate-set-capabilities",
                      capabilities=[{"capability": k, "state": v} for k, v in caps.items()])
            break
        except RuntimeError as e:
            if attempt == 2 or a.mode != "postcopy":
                raise
            caps["multifd"] = False
            row["note"] = "; ".join(filter(None, [row["note"],
                                                  f"multifd off: {e}".replace(",", ";")]))
    if a.mode == "postcopy" and "postcopy-blocktime" in have:
        dq.cmd("migrate-set-capabilities",
               capabilities=[{"capability": "postcopy-blocktime", "state": True}])
    for q in (dq, sq):
        if caps["multifd"]:
            q.cmd("migrate-set-parameters", **{"multifd-channels": a.channels})
    # Its best settings: no bandwidth cap (the default is 128 MiB/s in some
    # versions), the same 20 ms downtime limit as Flit.
    sq.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40, "downtime-limit": 20})


def migrate(a, dq, sq, row):
    """Starts the migration and waits for its end; returns query-migrate's
    last answer."""
    uri = f"tcp:127.0.0.1:{a.port}"
    dq.cmd("migrate-incoming", uri=uri)
    sq.cmd("migrate", uri=uri)
    t0, switched, cancelled = time.time(), False, False
    while True:
        info = sq.cmd("query-migrate")
        st = info.get("status")
        if st in ("completed", "failed", "cancelled"):
            return info
        if a.mode == "postcopy" and not switched and st == "active":
            # After the first round (the second dirty sync), or when the
            # rounds go on too long.
            if (info.get("ram", {}).get("dirty-sync-count", 0) >= 2
                    or time.time() - t0 > a.converge_timeout):
                sq.cmd("migrate-start-postcopy")
                switched = True
        elif (a.mode == "precopy" and a.workload != "idle" and not cancelled
              and time.time() - t0 > a.converge_timeout):
            sq.cmd("migrate_cancel")
            cancelled = True
            row["note"] = "; ".join(filter(None, [row["note"],
                                                  f"no convergence in {a.converge_timeout:g} s"]))
        time.sleep(0.01)


def figures(info, row):
    ram = info.get("ram", {})
    row["total_ms"] = info.get("total-time", "")
    row["downtime_ms"] = info.get("downtime", "")
    row["setup_ms"] = info.get("setup-time", "")
    row["bytes"] = ram.get("transferred", "")
    row["rounds"] = ram.get("dirty-sync-count", "")
    if row["total_ms"]:
        row["mb_per_s"] = round(ram.get("transferred", 0) / 1e3 / row["total_ms"])


def run_idle(a, row, tmp):
    src_mem, dst_mem = os.path.join(tmp, "src.ram"), os.path.join(tmp, "dst.ram")
    fill(src_mem, a.mem)
    procs = []
    try:
        d, dsock = qemu(tmp, "dst", a.mem, a.accel, dst_mem, a.prealloc, ["-incoming", "defer"])
        procs.append(d)
        s, ssock = qemu(tmp, "src", a.mem, a.accel, src_mem, False, ["-S"])
        procs.append(s)
        dq, sq = Qmp(dsock), Qmp(ssock)
        setup_caps(a, dq, sq, row)
        info = migrate(a, dq, sq, row)
        st = info.get("status")
        row["status"] = "ok" if st == "completed" else st
        dump(a, info)
        if st == "completed":
            figures(info, row)
            # The destination has the guest: wait until it says so.
            for _ in range(500):
                if dq.cmd("query-status").get("status") in ("paused", "running", "postmigrate"):
                    break
                time.sleep(0.01)
            row["verified"] = "yes" if same_files(src_mem, dst_mem, a.mem) else "FAILED"
            if row["verified"] != "yes":
                row["status"] = "failed"
    finally:
        for p in procs:
            p.kill()
            p.wait()


def run_hot(a, row, tmp):
    row["guest"] = "linux+dirty"
    kernel = find_kernel(a.kernel)
    initrd = os.path.join(tmp, "initrd.cpio")
    with open(guest_init(a.guest_init, tmp), "rb") as f:
        write_cpio(initrd, {"init": f.read()})
    append = (f"console=ttyS0 quiet panic=-1 fill={guest_fill_mib(a.mem)} hot={a.hot} "
              f"rate={a.rate}" + (" order=random" if a.workload == "random" else ""))

    def boot(name, prealloc, extra):
        serial = os.path.join(tmp, name + ".serial")
        if name == "dst" and a.mode == "postcopy":
            extra = extra + ["-msg", "timestamp=on", "-D", os.path.join(tmp, "dst.trace")]
            for ev in TRACE_EVENTS:
                extra += ["-trace", ev]
        p, qsock = qemu(tmp, name, a.mem, a.accel, None, prealloc,
                        ["-cpu", "max", "-kernel", kernel, "-initrd", initrd, "-append", append,
                         "-chardev", f"socket,id=ser0,path={serial},server=on,wait=off",
                         "-serial", "chardev:ser0", "-no-reboot"] + extra, smp=2)
        return p, qsock, serial

    procs = []
    try:
        s, ssock, sser = boot("src", False, [])
        procs.append(s)
        sc = Console(sser)
        sc.wait("DIRTY ready", a.boot_timeout)
        # Its dirtying rate, by its own count, over a couple of seconds.
        time.sleep(1)
        s0 = fields(sc.ask("stats", "DIRTY stats"))
        time.sleep(2)
        s1 = fields(sc.ask("stats", "DIRTY stats"))
        dt = float(s1["secs"]) - float(s0["secs"])
        if dt > 0:
            row["guest_rate_pps"] = round((int(s1["pages"]) - int(s0["pages"])) / dt)
        sc.close()
        d, dsock, dser = boot("dst", a.prealloc, ["-incoming", "defer"])
        procs.append(d)
        dq, sq = Qmp(dsock), Qmp(ssock)
        setup_caps(a, dq, sq, row)
        info = migrate(a, dq, sq, row)
        st = info.get("status")
        dinfo = dq.cmd("query-migrate") if st == "completed" else {}
        dump(a, info, dinfo)
        row["status"] = "ok" if st == "completed" else \
            ("no convergence" if st == "cancelled" and "no convergence" in row["note"] else st)
        if st != "completed":
            return
        figures(info, row)
        dc = Console(dser)
        if a.mode == "postcopy":
            reqs = info.get("ram", {}).get("postcopy-requests", 0)
            row["postcopy_requests"] = reqs
            vcpu_bt = dinfo.get("postcopy-vcpu-blocktime")
            if vcpu_bt and reqs:
                row["fault_mean_us"] = round(sum(vcpu_bt) * 1000 / reqs)
            dist = dinfo.get("postcopy-latency-dist")
            if dist:
                buckets = log2_buckets(dist)
                row["fault_source"] = "qemu-latency-dist"
                row["faults"] = sum(dist)
                if row["faults"]:
                    row["fault_p50_us"] = round(hist_percentile(buckets, 50))
                    row["fault_p99_us"] = round(hist_percentile(buckets, 99))
            else:
                trace = os.path.join(tmp, "dst.trace")
                lat = []
                if os.path.exists(trace):
                    with open(trace, errors="replace") as tf:
                        lat = fault_latencies(tf)
                row["fault_source"] = "qemu-trace"
                row["faults"] = len(lat)
                if lat:
                    row["fault_p50_us"] = percentile(lat, 50)
                    row["fault_p99_us"] = percentile(lat, 99)
        line = dc.ask("verify", "DIRTY verify", a.boot_timeout)
        v = fields(line)
        row["guest_stall_ms"] = v.get("stall_ms", "")
        ok = line.startswith("DIRTY verify ok ") and v.get("bad") == "0"
        row["verified"] = "yes" if ok else "FAILED"
        if not ok:
            row["status"] = "failed"
    finally:
        for p in procs:
            p.kill()
            p.wait()


def dump(a, info, dinfo=None):
    if not a.json:
        return
    rec = {"vmm": "qemu", "ram_mib": a.mem, "channels": a.channels, "workload": a.workload,
           "hot_mib": a.hot, "mode": a.mode, "query-migrate": info}
    if dinfo is not None:
        rec["destination"] = dinfo
    with open(a.json, "a") as jf:
        jf.write(json.dumps(rec) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--header-only", action="store_true", help="print the CSV header, exit")
    ap.add_argument("--mem", type=int, help="MiB")
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--prealloc", action="store_true")
    ap.add_argument("--accel", default="tcg")
    ap.add_argument("--port", type=int, default=7700)
    ap.add_argument("--workload", choices=("idle", "hot", "random"), default="idle")
    ap.add_argument("--hot", type=int, default=0, help="hot set, MiB (--workload hot)")
    ap.add_argument("--rate", type=int, default=0,
                    help="pages per second per vCPU the hot set is rewritten at (0: flat out)")
    ap.add_argument("--mode", choices=("precopy", "postcopy"), default="precopy")
    ap.add_argument("--no-preempt", action="store_true", help="post-copy without preempt")
    ap.add_argument("--converge-timeout", type=float, default=40.0,
                    help="seconds a busy guest's pre-copy may take (post-copy: switch then "
                    "at the latest)")
    ap.add_argument("--boot-timeout", type=float, default=300.0)
    ap.add_argument("--kernel", help="the busy guest's kernel (default: newest in /boot)")
    ap.add_argument("--guest-init", help="the busy guest's static /init (default: the build's)")
    ap.add_argument("--header", action="store_true")
    ap.add_argument("--json", help="append query-migrate's final answer here")
    a = ap.parse_args()
    if a.header_only:
        print(HEADER)
        return
    if not a.mem or a.mem < 4:
        ap.error("--mem MIB (at least 4) is required")
    if a.workload != "idle" and (a.hot <= 0 or a.mem < 256):
        ap.error(f"--workload {a.workload} needs --hot MIB and --mem of at least 256")
    if a.workload == "idle" and a.mode != "precopy":
        ap.error("the idle guest never runs: pre-copy only")
    if a.header:
        print(HEADER)
    row = dict.fromkeys(HEADER.split(","), "")
    row.update({"vmm": "qemu", "version": version(), "accel": a.accel, "ram_mib": a.mem,
                "workload": a.workload, "channels": a.channels,
                "dest_prealloc": "yes" if a.prealloc else "no", "status": "failed",
                "verified": "no", "hot_mib": a.hot if a.workload != "idle" else 0,
                "rate_pps": a.rate if a.workload != "idle" else "", "mode": a.mode,
                "guest": "paused (-S)"})
    try:
        major = int(row["version"].split(".")[0])
    except ValueError:
        major = 0
    if a.workload != "idle" and a.accel == "tcg" and major < 9:
        # Fixed upstream in 9.0; tools/setup installs 10 where it can.
        row["note"] = "QEMU before 9.0 loses pages a busy TCG guest dirties"
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        try:
            (run_hot if a.workload != "idle" else run_idle)(a, row, tmp)
        except Exception as e:  # reported as a failed run, never as a time
            print(f"qemu_ref: {e}", file=sys.stderr)
            for f in glob.glob(os.path.join(tmp, "*.log")):
                with open(f) as lf:
                    tail = lf.read()[-2000:]
                if tail.strip():
                    print(f"qemu_ref: {os.path.basename(f)}: {tail}", file=sys.stderr)
            row["status"] = "failed"
            row["note"] = row["note"] or str(e).replace(",", ";")[:120]
    if row["status"] != "ok":
        for k in ("total_ms", "downtime_ms", "setup_ms", "mb_per_s", "fault_p50_us",
                  "fault_p99_us", "fault_mean_us"):
            if a.workload != "idle":
                row[k] = ""
    print(",".join(str(row[k]) for k in HEADER.split(",")))


if __name__ == "__main__":
    main()
