#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Side-by-side table: Flit's migrations (flit-bench-precopy CSV) against
QEMU's (qemu_ref.py CSV) for the same case, as ratios Flit / QEMU.

A case is (RAM MiB, workload, hot set MiB, dirtying rate, mode, channels,
destination RAM preallocated); rows of CSVs written before the hot set and
the mode were columns count as idle pre-copy. For Flit, the row of the
chosen transport (default uring) counts, and for a QEMU guest that never
runs ("paused (-S)"), Flit's row with its guest paused too (column guest)
where there is one. A case where either side failed or
did not verify is reported as such, never as a ratio.

Every ratio that both sides give is there; key_figure / key_ratio name the
one the benchmark issue judges the case by: total time for an idle guest,
downtime for a busy one (hot set or random writes) in pre-copy, fault p99
in post-copy.

usage: compare.py FLIT_CSV QEMU_CSV [--transport uring]   (CSV on stdout)
"""
import argparse
import csv
import sys

OUT = ["ram_mib", "workload", "hot_mib", "mode", "channels", "dest_prealloc",
       "flit_total_ms", "qemu_total_ms", "total_ratio",
       "flit_downtime_ms", "qemu_downtime_ms", "downtime_ratio",
       "flit_mb_per_s", "qemu_mb_per_s", "throughput_ratio",
       "flit_fault_p50_us", "qemu_fault_p50_us", "flit_fault_p99_us", "qemu_fault_p99_us",
       "fault_p99_ratio", "key_figure", "key_ratio", "flit_guest", "qemu_guest",
       "qemu_guest_rate_pps",
       "qemu_note", "status"]


def num(v, default=0):
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return default


def key(row):
    return (num(row["ram_mib"]), row["workload"], num(row.get("hot_mib")),
            num(row.get("rate_pps")), row.get("mode") or "precopy", num(row["channels"]),
            row["dest_prealloc"])


def ok(row, verified_col="verified"):
    return row.get("status") == "ok" and row.get(verified_col) == "yes"


def ratio(a, b):
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return ""
    return f"{a / b:.2f}" if b > 0 else ""


def key_figure(workload, mode):
    if mode == "postcopy":
        return "fault_p99"
    return "total" if workload == "idle" else "downtime"


def compare(flit_rows, qemu_rows, transport="uring"):
    """Returns the table rows (dicts with the OUT keys), in QEMU's order."""
    flit, flit_paused = {}, {}
    for r in flit_rows:
        if (r.get("kind") == "migration" and r.get("transport", transport) == transport
                and r.get("mode", "precopy") in ("precopy", "postcopy")):
            (flit_paused if r.get("guest") == "paused" else flit)[key(r)] = r
    table = []
    for q in qemu_rows:
        k = key(q)
        f = flit.get(k)
        # A QEMU guest that never runs is compared with Flit's paused guest
        # where there is one: the same work on both sides.
        paused = q.get("guest", "").startswith("paused") and k in flit_paused
        if paused:
            f = flit_paused[k]
        row = dict.fromkeys(OUT, "")
        row.update(ram_mib=k[0], workload=k[1], hot_mib=k[2], mode=k[4], channels=k[5],
                   dest_prealloc=k[6])
        row["key_figure"] = key_figure(k[1], k[4])
        row["qemu_total_ms"] = q.get("total_ms", "")
        row["qemu_downtime_ms"] = q.get("downtime_ms", "")
        row["qemu_mb_per_s"] = q.get("mb_per_s", "")
        row["qemu_fault_p50_us"] = q.get("fault_p50_us", "")
        row["qemu_fault_p99_us"] = q.get("fault_p99_us", "")
        row["flit_guest"] = "memcheck (paused)" if paused else "memcheck"
        row["qemu_guest"] = q.get("guest", "")
        row["qemu_guest_rate_pps"] = q.get("guest_rate_pps", "")
        row["qemu_note"] = (q.get("note") or "").replace(",", ";")
        if f is None:
            row["status"] = "no flit run"
        else:
            row["flit_total_ms"] = f["total_ms"]
            row["flit_downtime_ms"] = f["downtime_ms"]
            row["flit_mb_per_s"] = f["mb_per_s"]
            if k[4] == "postcopy":
                row["flit_fault_p50_us"] = f.get("fault_p50_us", "")
                row["flit_fault_p99_us"] = f.get("fault_p99_us", "")
            if not ok(f):
                row["status"] = "flit failed"
            elif not ok(q):
                row["status"] = "qemu " + (q.get("status") if q.get("status") not in
                                           ("ok", "", None) else "failed")
            else:
                row["status"] = "ok"
                row["total_ratio"] = ratio(f["total_ms"], q["total_ms"])
                row["downtime_ratio"] = ratio(f["downtime_ms"], q["downtime_ms"])
                row["throughput_ratio"] = ratio(f["mb_per_s"], q["mb_per_s"])
                row["fault_p99_ratio"] = ratio(f.get("fault_p99_us"), q.get("fault_p99_us"))
                row["key_ratio"] = row[row["key_figure"] + "_ratio"]
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
