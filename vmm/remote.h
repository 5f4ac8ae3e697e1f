/* SPDX-License-Identifier: MIT */
/*
 * Guest RAM backed by memsvc (flit --mem-backend memsvc://HOST:PORT/NS):
 * the namespace holds the guest's RAM, this process only a bounded cache of
 * it (postcopy/pager.h). The first MiB (boot structures) stays resident and
 * local; every page above it is the namespace's page of the same number.
 *
 * The namespace is created if it does not exist (the guest's RAM size, no
 * limit beyond it) and opened as its owner: a new epoch, or the epoch given
 * (a destination taking over after a migration, see migrate/).
 */
#ifndef FLIT_VMM_REMOTE_H
#define FLIT_VMM_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "postcopy/pager.h"

struct vm;
struct remote_mem;

struct remote_params {
	const char *url;      /* memsvc://HOST[:PORT]/NAMESPACE */
	const uint8_t *token; /* the namespace's secret */
	size_t token_len;
	uint64_t cache_bytes; /* resident budget; 0: a quarter of RAM */
	int retry_ms;	      /* a lost service is retried this long (0: 30 s) */
	/* Drop whatever RAM above the first MiB is populated (a migration's
	 * destination, preallocated): the namespace has the real pages;
	 * except the pages set in keep (guest page numbers; may be NULL),
	 * which arrived newer than the namespace's and stay, dirty. Without
	 * drop_resident, populated pages (a loaded image) are this guest's,
	 * to write back. */
	bool drop_resident;
	const uint64_t *keep;
	/* Pages that arrived as zero (not written here): they stay too, as
	 * zeros. */
	const uint64_t *zeroed;
};

/* Attaches vm's RAM (created, image loaded, not started) to the namespace.
 * 0 or -errno, with the reason logged. */
int remote_open(struct remote_mem **out, struct vm *vm, const struct remote_params *p);
/* Writes back the dirty pages set in only (guest page numbers; NULL: all)
 * and leaves them writable: for a migration, whose dirty log tracks the
 * writes meanwhile. */
int remote_flush(struct remote_mem *rm, const uint64_t *only, uint64_t *written);
void remote_stats(struct remote_mem *rm, struct pager_stats *s);
/* Non-zero once the service has been gone for retry_ms (why filled). */
int remote_failed(struct remote_mem *rm, char *why, unsigned whylen);
uint64_t remote_epoch(const struct remote_mem *rm);
const char *remote_url(const struct remote_mem *rm);
/* Pages written since the last flush. */
uint64_t remote_dirty(struct remote_mem *rm);
/* Stops eviction (none in flight on return), or lets it go on. */
void remote_quiesce(struct remote_mem *rm, bool on);
/* Sets their bits (guest page numbers) in bitmap; returns how many. */
uint64_t remote_dirty_bitmap(struct remote_mem *rm, uint64_t *bitmap);
/* Whether guest page gfn is here now (a hint; the first MiB always is). */
bool remote_page_resident(struct remote_mem *rm, uint64_t gfn);
/* The resident pages (guest page numbers), oldest first, up to max. */
uint64_t remote_hot(struct remote_mem *rm, uint64_t *gfn, uint64_t max);
/* Reads the pages into RAM ahead of the guest (guest page numbers; those
 * below the first MiB and those resident are skipped). */
int remote_prefetch(struct remote_mem *rm, const uint64_t *gfn, uint64_t n);
/* 0 if this process still owns the namespace, -ESTALE if another took it,
 * or another -errno if the service cannot say. */
int remote_owned(struct remote_mem *rm);
/* Takes the namespace back as its new owner (a new epoch, which fences
 * whoever took it since): for a migration's source whose destination took
 * the namespace, then failed before its guest ran. Only with the vCPUs and
 * the evictor stopped. 0 or -errno, with the reason logged. */
int remote_retake(struct remote_mem *rm);
/* Only with the vCPUs stopped for good. */
void remote_close(struct remote_mem *rm);

#endif
