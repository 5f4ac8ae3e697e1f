#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""QEMU as the reference: one pre-copy migration between two QEMU processes
on this machine over loopback, driven through QMP, its figures read from
query-migrate. Prints one CSV row (the columns of HEADER).

The guest is idle: its RAM is a file filled with a pattern of the page
number (no zero pages, as in Flit's memcheck guest), the source is started
paused (-S) and never runs. The destination's RAM is another file; after
the migration it must equal the source's byte for byte, or the run is
reported as failed. QEMU runs under KVM where the host's KVM can run it,
under TCG otherwise (the accel column says which; an idle guest never
executes, so only the migration path is compared).

usage: qemu_ref.py --mem MIB --channels N [--prealloc] [--accel tcg|kvm]
                   [--port P] [--header] [--json FILE]
"""
import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

HEADER = ("vmm,version,accel,ram_mib,workload,channels,dest_prealloc,status,"
          "total_ms,downtime_ms,setup_ms,bytes,mb_per_s,verified")


class Qmp:
    """A QMP client: one command, one reply; events are skipped."""

    def __init__(self, path, timeout=60):
        end = time.time() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                if time.time() > end:
                    raise
                time.sleep(0.05)
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


def qemu(tmp, name, mib, accel, mem_path, prealloc, extra):
    sock = os.path.join(tmp, name + ".qmp")
    args = ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
            "-accel", accel, "-machine", "q35,memory-backend=ram0", "-m", f"{mib}M",
            "-object", f"memory-backend-file,id=ram0,size={mib}M,mem-path={mem_path},"
            f"share=on,prealloc={'on' if prealloc else 'off'}",
            "-qmp", f"unix:{sock},server=on,wait=off"] + extra
    log = open(os.path.join(tmp, name + ".log"), "w")
    proc = subprocess.Popen(args, stdout=log, stderr=log)
    return proc, sock


def version():
    out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True)
    return out.stdout.split("\n")[0].split("version ")[-1].split(" ")[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--header-only", action="store_true", help="print the CSV header, exit")
    ap.add_argument("--mem", type=int, help="MiB")
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--prealloc", action="store_true")
    ap.add_argument("--accel", default="tcg")
    ap.add_argument("--port", type=int, default=7700)
    ap.add_argument("--header", action="store_true")
    ap.add_argument("--json", help="append query-migrate's final answer here")
    a = ap.parse_args()
    if a.header_only:
        print(HEADER)
        return
    if not a.mem or a.mem < 4:
        ap.error("--mem MIB (at least 4) is required")
    if a.header:
        print(HEADER)
    row = {"vmm": "qemu", "version": version(), "accel": a.accel, "ram_mib": a.mem,
           "workload": "idle", "channels": a.channels,
           "dest_prealloc": "yes" if a.prealloc else "no", "status": "failed",
           "total_ms": "", "downtime_ms": "", "setup_ms": "", "bytes": "", "mb_per_s": "",
           "verified": "no"}
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        src_mem, dst_mem = os.path.join(tmp, "src.ram"), os.path.join(tmp, "dst.ram")
        fill(src_mem, a.mem)
        procs = []
        try:
            d, dsock = qemu(tmp, "dst", a.mem, a.accel, dst_mem, a.prealloc,
                            ["-incoming", "defer"])
            procs.append(d)
            s, ssock = qemu(tmp, "src", a.mem, a.accel, src_mem, False, ["-S"])
            procs.append(s)
            dq, sq = Qmp(dsock), Qmp(ssock)
            caps = [{"capability": "multifd", "state": True}]
            for q in (dq, sq):
                q.cmd("migrate-set-capabilities", capabilities=caps)
                q.cmd("migrate-set-parameters", **{"multifd-channels": a.channels})
            # Its best settings: no bandwidth cap (the default is 128 MiB/s
            # in some versions), the same 20 ms downtime limit as Flit.
            sq.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40,
                                                "downtime-limit": 20})
            uri = f"tcp:127.0.0.1:{a.port}"
            dq.cmd("migrate-incoming", uri=uri)
            sq.cmd("migrate", uri=uri)
            while True:
                info = sq.cmd("query-migrate")
                st = info.get("status")
                if st in ("completed", "failed", "cancelled"):
                    break
                time.sleep(0.01)
            row["status"] = "ok" if st == "completed" else st
            if a.json:
                with open(a.json, "a") as jf:
                    jf.write(json.dumps({"vmm": "qemu", "ram_mib": a.mem,
                                         "channels": a.channels, "query-migrate": info}) + "\n")
            if st == "completed":
                ram = info.get("ram", {})
                row["total_ms"] = info.get("total-time", "")
                row["downtime_ms"] = info.get("downtime", "")
                row["setup_ms"] = info.get("setup-time", "")
                row["bytes"] = ram.get("transferred", "")
                if row["total_ms"]:
                    row["mb_per_s"] = round(ram.get("transferred", 0) / 1e3 /
                                            row["total_ms"])
                # The destination has the guest: wait until it says so.
                for _ in range(500):
                    if dq.cmd("query-status").get("status") in ("paused", "running",
                                                                "postmigrate"):
                        break
                    time.sleep(0.01)
                row["verified"] = "yes" if same_files(src_mem, dst_mem, a.mem) else "FAILED"
                if row["verified"] != "yes":
                    row["status"] = "failed"
        except Exception as e:  # reported as a failed run, never as a time
            print(f"qemu_ref: {e}", file=sys.stderr)
        finally:
            for p in procs:
                p.kill()
                p.wait()
    print(",".join(str(row[k]) for k in HEADER.split(",")))


if __name__ == "__main__":
    main()
