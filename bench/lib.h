/* SPDX-License-Identifier: MIT */
/* What the benchmarks share: their command line, and the network floors
 * they report next to their results. */
#ifndef FLIT_BENCH_LIB_H
#define FLIT_BENCH_LIB_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "migrate/migrate.h"

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
	/* With BENCH_FILTER: --workload idle|hot|random (NULL: all), --channels
	 * N (0: all): only the cases that match; --paused: idle guests are
	 * paused first, as QEMU's reference guest is. */
	const char *workload;
	unsigned channels;
	bool paused;
};

#define BENCH_SELECT 1u /* the benchmark takes --ram, --only and --repeat */
#define BENCH_FILTER 2u /* and --workload, --channels and --paused */

/* [--quick|--smoke] [--out FILE] [--json FILE] and, with BENCH_SELECT,
 * [--ram SIZE,...] [--only MODE] [--repeat N], with BENCH_FILTER
 * [--workload W] [--channels N] [--paused]. Exits with the usage on
 * anything else. */
void bench_args(int argc, char **argv, const char *prog, unsigned flags, struct bench_opts *o);

/* One migration of the memcheck guest (2 vCPUs) over loopback, source and
 * destination in this process; the destination's RAM is ready before the
 * clock if prealloc. */
struct bench_case {
	uint64_t mem;
	uint64_t hot;  /* working set rewritten (0: idle) */
	uint64_t rate; /* pages per second per vCPU it is rewritten at (0: as fast as it can) */
	bool random;   /* hot pages a round, picked at random from all of RAM */
	unsigned channels;
	const char *dirty; /* dirty tracker */
	bool prealloc;
	bool pause_idle; /* an idle guest is paused first, as QEMU's reference guest is */
	enum mig_mode mode;
	const struct mig_policy_ops *policy; /* NULL: the mode's default */
	const struct transport_ops *transport;
	const char *zc;			/* FLIT_TRANSPORT_ZC for the run (NULL: unset) */
	const struct transport_ops *rx; /* the destination's (NULL: its default) */
};

struct bench_result {
	struct mig_report rep, dest_rep;
	int r, dest_r;
	/* the destination's guest checked all of its memory: "yes", "FAILED",
	 * or "no" (the migration failed) */
	const char *verified;
};

/* Runs the case; a failure is logged and reported, never fatal. */
void bench_migrate(const struct bench_case *c, struct bench_result *res);

#endif
