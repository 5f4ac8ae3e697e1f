/* SPDX-License-Identifier: MIT */
/*
 * The destination's side of post-copy: guest RAM registered with
 * userfaultfd, a fault service thread, and page placement. Two modes:
 *
 * - MISSING (anonymous memory): a page is placed with UFFDIO_COPY from a
 *   buffer; the kernel never overwrites a page that is there (EEXIST).
 * - MINOR (memfd memory, uffd_open_minor): the registered mapping shows
 *   only the pages mapped into it; their data is written first through an
 *   alias, a second mapping of the same memfd that is not registered, and
 *   then mapped with UFFDIO_CONTINUE. Pages can be received straight into
 *   the alias (no bounce buffer, no copy through the kernel). A page that
 *   is not even in the page cache (a hole) is filled with UFFDIO_COPY or
 *   UFFDIO_ZEROPAGE instead, as in MISSING mode, which is cheaper than
 *   faulting it into the alias (allocated, zeroed, then written). A write to
 *   the alias does overwrite a page that is mapped already, which the
 *   guest may have changed since: so every page is claimed (a per-page
 *   bit, test-and-set) before anything writes its alias, and a writer that
 *   loses the claim leaves the page alone. MISSING is registered as well,
 *   so that a page that is not even in the page cache (a hole) faults too.
 *
 * A vCPU (through KVM) or any VMM thread that touches a page not yet there
 * blocks in the kernel; the fault thread reads the fault and asks for the
 * page once (request callback; a page already asked for is not asked
 * again). Pages arrive from anywhere (the answer to a fault, the source's
 * background push); a run of pages is placed with DONTWAKE and its waiters
 * are woken once after; a page placed twice (a push racing a fault's
 * answer) counts once. Nothing here touches guest RAM through the
 * registered mapping: that would fault on itself.
 */
#ifndef FLIT_POSTCOPY_UFFD_H
#define FLIT_POSTCOPY_UFFD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define UFFD_PLACED 1

struct page_source_ops;

struct uffd {
	int fd, stop_fd;
	uint8_t *base;
	uint64_t nr_pages;
	uint64_t *placed; /* bitmap, atomic */
	/* MINOR: the alias, and the pages someone has claimed to write
	 * (bitmap, atomic; set before the alias is written, never cleared
	 * once the page is placed). NULL in MISSING mode. */
	uint8_t *alias;
	uint64_t *claimed;
	/* Per page: 0 untouched, UFFD_PLACED once placed, else the time of
	 * the first fault on it (the page is asked for then). Changed only
	 * by compare-and-swap or exchange, so a fault and a placement that
	 * race are counted exactly once. */
	uint64_t *fault_ns;
	uint64_t nr_placed; /* atomic */
	const struct page_source_ops *src;
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
/* MINOR mode: base is a shared mapping of a memfd, alias another mapping
 * of the same range of it. Registers base for MINOR and MISSING faults.
 * A page whose page-table entry is present in base is there (mark it
 * present); any other page must be kept from the guest: zap its entries
 * first (MADV_DONTNEED on base keeps the page cache, so it then gives a
 * MINOR fault). -ENOTSUP: the kernel has no minor faults on shared memory
 * (Linux 5.14). */
int uffd_open_minor(struct uffd *u, void *base, void *alias, uint64_t nr_pages);
/* Whether this process may open a userfaultfd with what a mode needs
 * (minor: MINOR mode), without registering anything. 0 or -errno. */
int uffd_probe(bool minor);
/* The pages are there (and, MINOR, claimed). */
void uffd_mark_present(struct uffd *u, uint64_t gfn, uint64_t count);
/* The same for every page set in bm (nr_pages bits), a word at a time. */
void uffd_mark_present_bitmap(struct uffd *u, const uint64_t *bm);

/* Where the fault thread gets a missing page from: the source VMM over a
 * post-copy migration's control connection (migrate/dest.c), a page store
 * such as memsvc (postcopy/pager.c); a file later. */
struct page_source_ops {
	const char *name;
	/* Asks for page gfn; its data comes back through uffd_place (or
	 * uffd_place_zero), on any thread. Must not block on guest RAM (that
	 * would fault on itself). 0 or -errno: an error stops the service. */
	int (*request)(void *opaque, uint64_t gfn);
};

/* Starts the fault thread, which asks src for every page faulted on. */
int uffd_start(struct uffd *u, const struct page_source_ops *src, void *opaque);

/* Places count pages from src at gfn (any that are there already, or
 * claimed by another writer, are skipped) and wakes their waiters once.
 * 0 or -errno. */
int uffd_place(struct uffd *u, uint64_t gfn, const void *src, uint32_t count);
/* The same, the pages mapped write-protected if wp (UFFD_OPEN_WP, MISSING
 * mode only): the first write to each then reaches wp_fault. */
int uffd_place_mode(struct uffd *u, uint64_t gfn, const void *src, uint32_t count, bool wp);
/* Pages of zeros. */
int uffd_place_zeros(struct uffd *u, uint64_t gfn, uint64_t count);
static inline int uffd_place_zero(struct uffd *u, uint64_t gfn)
{
	return uffd_place_zeros(u, gfn, 1);
}

/* MINOR mode, writing in place: claim the run; bit i of mine (count bits,
 * cleared by the caller) is set for each page gfn + i that this caller
 * won, and only those may be written, at uffd_alias(u, gfn + i). Then
 * uffd_continue maps the pages won (the others count as found there) and
 * wakes the run's waiters once; or, if their data never came,
 * uffd_unclaim gives them back for the next writer. */
void uffd_claim(struct uffd *u, uint64_t gfn, uint32_t count, uint64_t *mine);
int uffd_continue(struct uffd *u, uint64_t gfn, uint32_t count, const uint64_t *mine);
void uffd_unclaim(struct uffd *u, uint64_t gfn, uint32_t count, const uint64_t *mine);
/* MINOR mode: whether every page of the run is in the page cache, so that
 * writing it through the alias allocates nothing (a hole is cheaper to
 * fill from a buffer with uffd_place, which allocates without zeroing). */
bool uffd_cached(struct uffd *u, uint64_t gfn, uint32_t count);
static inline uint8_t *uffd_alias(struct uffd *u, uint64_t gfn)
{
	return u->alias + gfn * 4096;
}

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
