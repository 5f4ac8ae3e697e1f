/* SPDX-License-Identifier: MIT */
/* Reads one side of a captured migration connection (what the source sent)
 * and prints its records, checking each one as a destination would. */
#ifndef FLIT_MIGRATE_DUMP_H
#define FLIT_MIGRATE_DUMP_H

#include <stdint.h>
#include <stdio.h>

struct mig_dump_stats {
	uint64_t records, pages, zero_pages, bytes;
};

/* 0 at a clean end of stream; -EPROTO (reason in why) on a bad record or a
 * stream cut inside a record. out may be NULL (check only). */
int mig_dump(int fd, FILE *out, struct mig_dump_stats *st, char *why, size_t whylen);

#endif
