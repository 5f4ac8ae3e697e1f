#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The figures bench/qemu_ref.py computes: percentiles of a list and of a
histogram, QEMU's log2 latency buckets, post-copy fault latencies from the
destination's trace, and the busy guest's initramfs."""
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import qemu_ref  # noqa: E402


class Percentiles(unittest.TestCase):
    def test_list_nearest_rank(self):
        v = list(range(1, 101))  # 1..100
        self.assertEqual(qemu_ref.percentile(v, 50), 50)
        self.assertEqual(qemu_ref.percentile(v, 99), 99)
        self.assertEqual(qemu_ref.percentile(v, 100), 100)
        self.assertEqual(qemu_ref.percentile([7], 99), 7)
        self.assertEqual(qemu_ref.percentile([3, 1, 2], 50), 2)
        self.assertIsNone(qemu_ref.percentile([], 50))

    def test_histogram_interpolates_inside_a_bucket(self):
        b = [(0, 10, 50), (10, 20, 50)]
        self.assertEqual(qemu_ref.hist_percentile(b, 50), 10)
        self.assertEqual(qemu_ref.hist_percentile(b, 25), 5)
        self.assertEqual(qemu_ref.hist_percentile(b, 99), 19.8)
        self.assertEqual(qemu_ref.hist_percentile(b, 100), 20)

    def test_histogram_order_and_empty_buckets(self):
        b = [(100, 200, 1), (0, 1, 0), (1, 2, 99)]
        self.assertAlmostEqual(qemu_ref.hist_percentile(b, 50), 1 + 50 / 99)
        self.assertEqual(qemu_ref.hist_percentile(b, 100), 200)
        self.assertIsNone(qemu_ref.hist_percentile([(0, 1, 0)], 50))
        self.assertIsNone(qemu_ref.hist_percentile([], 50))

    def test_histogram_top_keeps_the_largest(self):
        b = [(0, 10, 90), (100, 200, 10)]
        # only the 10 slowest: all in the upper bucket
        self.assertEqual(qemu_ref.hist_percentile(b, 50, top=10), 150)
        # 20 slowest: the upper ninth of the lower bucket (its top 10 of 90,
        # [8.89, 10)) and the upper bucket
        self.assertAlmostEqual(qemu_ref.hist_percentile(b, 25, top=20), 10 - 10 / 18)

    def test_qemu_log2_buckets(self):
        # bucket N counts [2^N, 2^(N+1)) microseconds
        b = qemu_ref.log2_buckets([0, 0, 4, 0, 1])
        self.assertEqual(b, [(4, 8, 4), (16, 32, 1)])
        self.assertEqual(qemu_ref.hist_percentile(b, 50), 6.5)


TRACE = """\
1234@1700000000.000100:postcopy_ram_fault_thread_request Request for HVA=0x7f0000001000 rb=ram0 offset=0x1000 pid=55
1234@1700000000.000150:postcopy_place_page host=0x7f0000005000
1234@1700000000.000400:postcopy_ram_fault_thread_request Request for HVA=0x7f0000002000 rb=ram0 offset=0x2000 pid=56
1234@1700000000.000900:postcopy_place_page host=0x7f0000001000
1234@1700000000.001400:postcopy_place_page_zero host=0x7f0000002000
something else
1234@1700000000.002000:postcopy_ram_fault_thread_request Request for HVA=0x7f0000003000 rb=ram0 offset=0x3000 pid=56
1234@1700000001.000010:postcopy_place_page host=0x7f0000003000
1234@1700000002.000000:postcopy_ram_fault_thread_request Request for HVA=0x7f0000009000 rb=ram0 offset=0x9000 pid=56
"""


class Trace(unittest.TestCase):
    def test_fault_to_placed_page(self):
        lat = qemu_ref.fault_latencies(TRACE.splitlines())
        # 0x1000: 800 us; 0x2000 (zero page): 1000 us; 0x3000 across a second;
        # 0x9000 never placed: left out; 0x5000 placed unasked: not a fault
        self.assertEqual(lat, [800, 1000, 998010])

    def test_two_requests_for_one_page(self):
        lines = TRACE.splitlines()[:1] + [
            "1@1700000000.000300:postcopy_ram_fault_thread_request Request for "
            "HVA=0x7f0000001000 rb=ram0 offset=0x1000 pid=57"] + TRACE.splitlines()[1:4]
        self.assertEqual(qemu_ref.fault_latencies(lines), [800, 600])


class Initramfs(unittest.TestCase):
    def test_newc_archive(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "i.cpio")
            qemu_ref.write_cpio(p, {"init": b"\x7fELF12345"})
            data = open(p, "rb").read()
        self.assertEqual(len(data) % 4, 0)
        self.assertTrue(data.startswith(b"070701"))
        head = data[6:110]
        fields = [int(head[i:i + 8], 16) for i in range(0, 104, 8)]
        self.assertEqual(fields[1], 0o100755)  # mode
        self.assertEqual(fields[6], 9)  # file size
        self.assertEqual(fields[11], 5)  # "init\0"
        self.assertEqual(data[110:115], b"init\0")
        self.assertIn(b"\x7fELF12345", data)
        self.assertIn(b"TRAILER!!!\0", data)

    def test_fill_leaves_the_kernel_room(self):
        self.assertEqual(qemu_ref.guest_fill_mib(1024), 832)
        self.assertEqual(qemu_ref.guest_fill_mib(256), 128)


if __name__ == "__main__":
    unittest.main()
