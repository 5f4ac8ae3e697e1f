#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Timelines of Flit migrations: from each report (flit.jsonl, one JSON
object a line, with its "timeline" of rounds), a PNG per migration with the
bytes/s of every round and the dirty pages left after it, over time from
the migration's start, the stop-and-copy round shaded and the pause and
resume marked.

usage: timeline.py FLIT_JSONL OUT_DIR   (writes OUT_DIR/timeline-N.png)
"""
import json
import os
import subprocess
import sys


def rows(report):
    """Per round: start, end, MB/s, dirty pages left, stopped (0/1)."""
    out = []
    for r in report.get("timeline", []):
        secs = (r["end_ms"] - r["start_ms"]) / 1e3
        mbps = r["bytes"] / 1e6 / secs if secs > 0 else 0.0
        out.append((r["start_ms"], r["end_ms"], mbps, r["dirty_pages"], int(r["stopped"])))
    return out


def title(report, n):
    return (f"migration {n}: {report['mem_bytes'] >> 20} MiB, {report['channels']} channels, "
            f"{report['transport']}, {report['status']}, total {report['total_ms']:.0f} ms, "
            f"downtime {report['downtime_ms']:.1f} ms")


def plot(report, n, out_dir):
    data = os.path.join(out_dir, f"timeline-{n}.dat")
    with open(data, "w") as f:
        for r in rows(report):
            f.write("%.3f %.3f %.1f %d %d\n" % r)
    png = os.path.join(out_dir, f"timeline-{n}.png")
    marks = ""
    for key, label, y in (("paused_at_ms", "pause", 0.95), ("resumed_at_ms", "resume", 0.88)):
        if key in report:
            marks += (f'set arrow from {report[key]},graph 0 to {report[key]},graph 1 nohead '
                      f'dt 2 lc rgb "red"\n'
                      f'set label "{label}" at {report[key]},graph {y} right tc rgb "red"\n')
    script = f"""set terminal png size 900,500
set output "{png}"
set title "{title(report, n)}" noenhanced
set xlabel "ms since the migration started"
set ylabel "MB/s in the round"
set y2label "dirty pages left after the round"
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set style fill transparent solid 0.4
set key top left
{marks}plot "{data}" using (($1+$2)/2):3:($1):($2):(0):3 with boxxyerror lc rgb "blue" title "MB/s", \\
     "" using 2:4 axes x1y2 with linespoints lc rgb "dark-green" title "dirty pages", \\
     "" using (($1+$2)/2):($5 > 0 ? $3 : 1/0) with points pt 7 lc rgb "red" title "stopped round"
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    os.unlink(data)
    return png


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: timeline.py FLIT_JSONL OUT_DIR")
    with open(sys.argv[1]) as f:
        reports = [json.loads(line) for line in f if line.strip()]
    for n, rep in enumerate(reports, 1):
        if rep.get("timeline"):
            print(plot(rep, n, sys.argv[2]))


if __name__ == "__main__":
    main()
