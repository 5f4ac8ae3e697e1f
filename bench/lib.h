/* SPDX-License-Identifier: MIT */
/* What the benchmarks share: their command line, and the network floors
 * they report next to their results. */
#ifndef FLIT_BENCH_LIB_H
#define FLIT_BENCH_LIB_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* One 4 KiB request/response round trip over loopback TCP (the same socket
 * settings as a migration), the median of 2000, in µs: the floor for a
 * post-copy or remote-memory fault. p99 (may be NULL) gets the 99th
 * percentile. */
double rtt_4k_us(double *p99);

int cmp_double(const void *a, const void *b);

struct bench_opts {
	bool quick, smoke;
	FILE *out;  /* stdout unless --out */
	FILE *json; /* NULL unless --json */
	/* With BENCH_SELECT: --ram SIZE[,SIZE...] (nram 0: the benchmark's
	 * own list), --only MODE (NULL: every mode), --repeat N (1). */
	uint64_t ram[8];
	unsigned nram, repeat;
	const char *only;
};

#define BENCH_SELECT 1u /* the benchmark takes --ram, --only and --repeat */

/* [--quick|--smoke] [--out FILE] [--json FILE] and, with BENCH_SELECT,
 * [--ram SIZE,...] [--only MODE] [--repeat N]. Exits with the usage on
 * anything else. */
void bench_args(int argc, char **argv, const char *prog, unsigned flags, struct bench_opts *o);

#endif
