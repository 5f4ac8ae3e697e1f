#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Side-by-side table: Flit's pre-copy migrations (flit-bench-precopy CSV)
against QEMU's (qemu_ref.py CSV) for the same case, as ratios Flit / QEMU.

A case is (RAM MiB, workload, channels, destination RAM preallocated). For
Flit, the row of the chosen transport (default uring) counts. A case where
either side failed or did not verify is reported as such, never as a ratio.

usage: compare.py FLIT_CSV QEMU_CSV [--transport uring]   (CSV on stdout)
"""
import argparse
import csv
import sys

OUT = ["ram_mib", "workload", "channels", "dest_prealloc", "flit_total_ms", "qemu_total_ms",
       "total_ratio", "flit_downtime_ms", "qemu_downtime_ms", "downtime_ratio",
       "flit_mb_per_s", "qemu_mb_per_s", "throughput_ratio", "status"]


def key(row):
    return (int(row["ram_mib"]), row["workload"], int(row["channels"]), row["dest_prealloc"])


def ok(row, verified_col="verified"):
    return row.get("status") == "ok" and row.get(verified_col) == "yes"


def ratio(a, b):
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return ""
    return f"{a / b:.2f}" if b > 0 else ""


def compare(flit_rows, qemu_rows, transport="uring"):
    """Returns the table rows (dicts with the OUT keys), in QEMU's order."""
    flit = {}
    for r in flit_rows:
        if (r.get("kind") == "migration" and r.get("transport", transport) == transport
                and r.get("mode", "precopy") == "precopy"):
            flit[key(r)] = r
    table = []
    for q in qemu_rows:
        k = key(q)
        f = flit.get(k)
        row = dict.fromkeys(OUT, "")
        row.update(ram_mib=k[0], workload=k[1], channels=k[2], dest_prealloc=k[3])
        row["qemu_total_ms"] = q.get("total_ms", "")
        row["qemu_downtime_ms"] = q.get("downtime_ms", "")
        row["qemu_mb_per_s"] = q.get("mb_per_s", "")
        if f is None:
            row["status"] = "no flit run"
        else:
            row["flit_total_ms"] = f["total_ms"]
            row["flit_downtime_ms"] = f["downtime_ms"]
            row["flit_mb_per_s"] = f["mb_per_s"]
            if not ok(f):
                row["status"] = "flit failed"
            elif not ok(q):
                row["status"] = "qemu failed"
            else:
                row["status"] = "ok"
                row["total_ratio"] = ratio(f["total_ms"], q["total_ms"])
                row["downtime_ratio"] = ratio(f["downtime_ms"], q["downtime_ms"])
                row["throughput_ratio"] = ratio(f["mb_per_s"], q["mb_per_s"])
        table.append(row)
    return table


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("flit")
    ap.add_argument("qemu")
    ap.add_argument("--transport", default="uring")
    a = ap.parse_args()
    with open(a.flit) as f:
        flit_rows = list(csv.DictReader(f))
    with open(a.qemu) as f:
        qemu_rows = list(csv.DictReader(f))
    w = csv.DictWriter(sys.stdout, fieldnames=OUT, lineterminator="\n")
    w.writeheader()
    for row in compare(flit_rows, qemu_rows, a.transport):
        w.writerow(row)


if __name__ == "__main__":
    main()
