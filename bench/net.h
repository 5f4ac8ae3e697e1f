/* SPDX-License-Identifier: MIT */
/* Network floors the benchmarks report next to their results. */
#ifndef FLIT_BENCH_NET_H
#define FLIT_BENCH_NET_H

/* One 4 KiB request/response round trip over loopback TCP (the same socket
 * settings as a migration), the median of 2000, in µs: the floor for a
 * post-copy or remote-memory fault. p99 (may be NULL) gets the 99th
 * percentile. */
double rtt_4k_us(double *p99);

int cmp_double(const void *a, const void *b);

#endif
