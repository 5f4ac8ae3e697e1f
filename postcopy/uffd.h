/* SPDX-License-Identifier: MIT */
/*
 * The destination's side of post-copy: guest RAM registered with
 * userfaultfd (MISSING mode, anonymous memory), a fault service thread, and
 * page placement.
 *
 * A vCPU (through KVM) or any VMM thread that touches a page not yet there
 * blocks in the kernel; the fault thread reads the fault and asks for the
 * page once (request callback; a page already asked for is not asked
 * again). Pages arrive from anywhere (the answer to a fault, the source's
 * background push) and are placed with UFFDIO_COPY, which wakes whoever
 * waits on them; a page placed twice (a push racing a fault's answer) gets
 * EEXIST and counts once. Nothing here touches guest RAM directly: that
 * would fault on itself.
 */
#ifndef FLIT_POSTCOPY_UFFD_H
#define FLIT_POSTCOPY_UFFD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define UFFD_PLACED 1

struct uffd {
	int fd, stop_fd;
	uint8_t *base;
	uint64_t nr_pages;
	uint64_t *placed; /* bitmap, atomic */
	/* Per page: 0 untouched, UFFD_PLACED once placed, else the time of
	 * the first fault on it (the page is asked for then). Changed only
	 * by compare-and-swap or exchange, so a fault and a placement that
	 * race are counted exactly once. */
	uint64_t *fault_ns;
	uint64_t nr_placed; /* atomic */
	int (*request)(void *opaque, uint64_t gfn);
	/* With UFFD_OPEN_WP: a write hit a write-protected page (the fault
	 * thread; the writer waits until the page is unprotected or woken). */
	void (*wp_fault)(void *opaque, uint64_t gfn);
	void *opaque;
	pthread_t thread;
	bool started;
	int err; /* the fault thread's, if it stopped on one */
	/* statistics (atomic) */
	uint64_t faults;  /* distinct pages faulted on */
	uint64_t pulled;  /* faulted pages placed by their answer or a push */
	uint64_t eexist;  /* placements that found the page there */
	uint32_t *lat_us; /* fault read -> page placed, one per pulled page */
	uint64_t nr_lat;
};

/* Registers [base, base + nr_pages * 4096) for MISSING faults. The pages
 * present already (populated) never fault; mark them with uffd_mark_present
 * so that completion counts them. 0 or -errno (-EPERM: no permission for
 * kernel-mode faults; see docs). */
#define UFFD_OPEN_WP 1u /* write-protect faults too (uffd_protect, wp_fault) */
int uffd_open(struct uffd *u, void *base, uint64_t nr_pages, unsigned flags);
void uffd_mark_present(struct uffd *u, uint64_t gfn, uint64_t count);
/* The same for every page set in bm (nr_pages bits), a word at a time. */
void uffd_mark_present_bitmap(struct uffd *u, const uint64_t *bm);

/* Starts the fault thread: request(opaque, gfn) asks for one page (it must
 * not block on guest RAM). */
int uffd_start(struct uffd *u, int (*request)(void *opaque, uint64_t gfn), void *opaque);

/* Places count pages from src at gfn (any that are there already are
 * skipped) and wakes their waiters. 0 or -errno. */
int uffd_place(struct uffd *u, uint64_t gfn, const void *src, uint32_t count);
/* The same, the pages mapped write-protected if wp (UFFD_OPEN_WP): the
 * first write to each then reaches wp_fault. */
int uffd_place_mode(struct uffd *u, uint64_t gfn, const void *src, uint32_t count, bool wp);
/* A page of zeros. */
int uffd_place_zero(struct uffd *u, uint64_t gfn);

/* Write-protects (on) or unprotects count pages; unprotecting wakes the
 * writers that wait on them. 0 or -errno. */
int uffd_protect(struct uffd *u, uint64_t gfn, uint64_t count, bool on);
/* Wakes whoever waits on the pages (they fault again if need be). */
void uffd_wake(struct uffd *u, uint64_t gfn, uint64_t count);
/* The page is about to be dropped (MADV_DONTNEED): it counts as never
 * placed, and the next fault on it asks for it again. */
void uffd_forget(struct uffd *u, uint64_t gfn);

/* Pages faulted on and not placed yet. */
static inline bool uffd_waiting(struct uffd *u)
{
	return __atomic_load_n(&u->faults, __ATOMIC_RELAXED) >
	       __atomic_load_n(&u->pulled, __ATOMIC_RELAXED);
}

static inline bool uffd_complete(struct uffd *u)
{
	return __atomic_load_n(&u->nr_placed, __ATOMIC_ACQUIRE) >= u->nr_pages;
}

/* Fault latencies in µs at quantiles q[0..n) (0..1; 1 is the maximum),
 * into out; 0 where there were no faults. Sorts the samples: call once the
 * faults are over. */
void uffd_latency_quantiles(struct uffd *u, const double *q, uint64_t *out, unsigned n);

/* Stops the fault thread, unregisters, frees. Tolerates a half-open one. */
void uffd_close(struct uffd *u);

#endif
