/* SPDX-License-Identifier: MIT */
/* What the benchmarks share: their command line, and the network floors
 * they report next to their results. */
#ifndef FLIT_BENCH_LIB_H
#define FLIT_BENCH_LIB_H

#include <stdbool.h>
#include <stdio.h>

/* One 4 KiB request/response round trip over loopback TCP (the same socket
 * settings as a migration), the median of 2000, in µs: the floor for a
 * post-copy or remote-memory fault. p99 (may be NULL) gets the 99th
 * percentile. */
double rtt_4k_us(double *p99);

int cmp_double(const void *a, const void *b);

/* [--quick|--smoke] [--out FILE] [--json FILE]: *out is stdout unless
 * --out; *json NULL unless --json. Exits with the usage on anything else. */
void bench_args(int argc, char **argv, const char *prog, bool *quick, bool *smoke, FILE **out,
		FILE **json);

#endif
