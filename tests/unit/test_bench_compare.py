#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The Flit / QEMU ratio table of bench/compare.py: ratios of matching cases,
failed or unverified runs never turned into ratios, the chosen transport."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import compare  # noqa: E402


def flit(ram=1024, ch=2, total="500", down="2", mbps="2000", status="ok", verified="yes",
         transport="uring", prealloc="yes", workload="idle"):
    return {"kind": "migration", "mode": "precopy", "ram_mib": str(ram), "workload": workload, "channels": str(ch),
            "dest_prealloc": prealloc, "total_ms": total, "downtime_ms": down,
            "mb_per_s": mbps, "status": status, "verified": verified, "transport": transport}


def qemu(ram=1024, ch=2, total="1000", down="8", mbps="1000", status="ok", verified="yes"):
    return {"ram_mib": str(ram), "workload": "idle", "channels": str(ch), "dest_prealloc": "yes",
            "total_ms": total, "downtime_ms": down, "mb_per_s": mbps, "status": status,
            "verified": verified}


def hot(row, mib, mode="precopy", p99="", rate="0"):
    """row made a hot-set case (a QEMU row written by today's qemu_ref.py)."""
    row.update(workload="hot", hot_mib=str(mib), mode=mode, rate_pps=rate,
               fault_p99_us=p99)
    return row


class Compare(unittest.TestCase):
    def test_ratios_of_a_matching_case(self):
        (row,) = compare.compare([flit()], [qemu()])
        self.assertEqual(row["status"], "ok")
        self.assertEqual(row["total_ratio"], "0.50")
        self.assertEqual(row["downtime_ratio"], "0.25")
        self.assertEqual(row["throughput_ratio"], "2.00")

    def test_paused_qemu_guest_pairs_with_flits_paused_guest(self):
        running, paused = flit(total="900"), flit(total="400")
        paused["guest"] = "paused"
        q = qemu()
        q["guest"] = "paused (-S)"
        for rows in ([running, paused], [paused, running]):
            (row,) = compare.compare(rows, [q])
            self.assertEqual(row["total_ratio"], "0.40")
            self.assertEqual(row["flit_guest"], "memcheck (paused)")
        # Without a paused row, the running guest's; a running QEMU guest
        # never pairs with a paused Flit guest.
        (row,) = compare.compare([running], [q])
        self.assertEqual((row["total_ratio"], row["flit_guest"]), ("0.90", "memcheck"))
        (row,) = compare.compare([running, paused], [qemu()])
        self.assertEqual(row["total_ratio"], "0.90")

    def test_cases_match_on_ram_and_channels(self):
        rows = compare.compare([flit(ch=4, total="100"), flit(ram=2048, total="300")],
                               [qemu(ch=4), qemu(ram=2048)])
        self.assertEqual([r["total_ratio"] for r in rows], ["0.10", "0.30"])

    def test_failed_or_unverified_runs_give_no_ratio(self):
        for f, q, why in ((flit(status="failed"), qemu(), "flit failed"),
                          (flit(verified="FAILED"), qemu(), "flit failed"),
                          (flit(), qemu(verified="FAILED"), "qemu failed"),
                          (flit(), qemu(status="failed", total=""), "qemu failed")):
            (row,) = compare.compare([f], [q])
            self.assertEqual(row["status"], why)
            self.assertEqual(row["total_ratio"], "")

    def test_missing_flit_case(self):
        (row,) = compare.compare([flit(ch=1)], [qemu(ch=2)])
        self.assertEqual(row["status"], "no flit run")

    def test_transport_chooses_the_row(self):
        rows = [flit(transport="sync", total="900"), flit(transport="uring", total="400")]
        (row,) = compare.compare(rows, [qemu()])
        self.assertEqual(row["total_ratio"], "0.40")
        (row,) = compare.compare(rows, [qemu()], transport="sync")
        self.assertEqual(row["total_ratio"], "0.90")

    def test_only_precopy_rows_compare(self):
        post = flit(total="100")
        post["mode"] = "postcopy"
        (row,) = compare.compare([post, flit(total="700")], [qemu()])
        self.assertEqual(row["total_ratio"], "0.70")

    def test_zero_reference_is_no_ratio(self):
        (row,) = compare.compare([flit()], [qemu(down="0")])
        self.assertEqual(row["downtime_ratio"], "")


    def test_hot_cases_pair_on_hot_set_and_mode(self):
        flits = [hot(flit(down="10"), 64), hot(flit(down="30"), 256),
                 hot(flit(down="40"), 256, "postcopy", p99="800"),
                 hot(flit(down="99"), 256, rate="20000")]
        qemus = [hot(qemu(down="20"), 256), hot(qemu(down="40"), 64),
                 hot(qemu(down="1", status="ok"), 256, "postcopy", p99="2000")]
        rows = compare.compare(flits, qemus)
        self.assertEqual([r["downtime_ratio"] for r in rows], ["1.50", "0.25", "40.00"])
        self.assertEqual([r["key_figure"] for r in rows], ["downtime", "downtime", "fault_p99"])
        self.assertEqual([r["key_ratio"] for r in rows], ["1.50", "0.25", "0.40"])

    def test_random_writes_pair_apart_from_the_hot_set_and_judge_downtime(self):
        rnd = lambda row: dict(hot(row, 256), workload="random")
        flits = [hot(flit(down="30"), 256), rnd(flit(down="12"))]
        qemus = [rnd(qemu(down="24")), hot(qemu(down="20"), 256)]
        rows = compare.compare(flits, qemus)
        self.assertEqual(sorted((r["workload"], r["key_figure"], r["key_ratio"]) for r in rows),
                         [("hot", "downtime", "1.50"), ("random", "downtime", "0.50")])

    def test_idle_key_figure_is_total_time(self):
        (row,) = compare.compare([flit()], [qemu()])
        self.assertEqual((row["key_figure"], row["key_ratio"]), ("total", "0.50"))

    def test_qemu_that_did_not_converge_says_so(self):
        q = hot(qemu(status="no convergence", total="", down=""), 256)
        (row,) = compare.compare([hot(flit(), 256)], [q])
        self.assertEqual(row["status"], "qemu no convergence")
        self.assertEqual(row["key_ratio"], "")


if __name__ == "__main__":
    unittest.main()
