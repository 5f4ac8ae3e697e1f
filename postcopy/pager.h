/* SPDX-License-Identifier: MIT */
/*
 * Guest RAM paged from a page store (memsvc): pages come in on demand
 * through userfaultfd and go out when the resident set is over its budget.
 *
 * Every page of the paged range is in one of these states:
 *   MISSING       not resident; the next touch faults, the fault thread
 *                 reads the page (and up to readahead - 1 missing pages
 *                 after it) from the store and places it
 *   CLEAN         resident, the same as the store's copy, write-protected
 *                 (placed with UFFDIO_COPY_MODE_WP)
 *   DIRTY         resident and writable: written since it was stored, or
 *                 never stored (a page the store never had arrives so: it
 *                 is most likely about to be filled), or stored by a flush
 *                 whose caller tracks later writes itself
 *   UNPROTECTING  the fault thread is lifting the protection after a write
 *   BUSY          the evictor or a flush holds it, write-protected, and
 *                 writes it back (a writer waits until it is done)
 * So the write protection is the eviction's dirty tracking: a clean page
 * needs no write-back before it is dropped. A migration's flushes leave
 * pages writable and track writes with KVM's dirty log instead (cheaper
 * for the guest than a write-protect fault per page).
 *
 * Eviction: when the resident set passes cache_pages, the evictor takes
 * pages in the order they came in (a second chance for pages written since
 * they were last passed over; reads are not seen), writes back the dirty
 * ones straight from guest RAM while they are write-protected, drops them
 * (MADV_DONTNEED) and wakes anyone who waited on them.
 *
 * A store that fails is reconnected (retry_ms); a page that cannot be
 * fetched stays a fault the vCPU waits on, and pager_failed says so once
 * the store has been gone for retry_ms. A page that cannot be written back
 * stays resident and dirty: nothing is dropped that the store did not take.
 */
#ifndef FLIT_POSTCOPY_PAGER_H
#define FLIT_POSTCOPY_PAGER_H

#include <stdbool.h>
#include <stdint.h>

/* Where pages live. Each pager thread uses its own store handle. */
struct page_store_ops {
	/* n pages into out (n <= max_batch for a fault, <= max_many for a
	 * prefetch); zero[i] set if the store never had page i. */
	int (*read)(void *store, const uint64_t *gfn, unsigned n, void *out, bool *zero);
	/* n (<= max_many) pages from src[i]; 0 once the store holds them. */
	int (*write)(void *store, const uint64_t *gfn, unsigned n, const void *const *src);
	/* After a failure: connect again (NULL: cannot). */
	int (*reconnect)(void *store);
	const char *(*why)(void *store);
	unsigned max_batch; /* pages per read (a fault's) */
	/* Pages per write, and per read of a prefetch (0: max_batch): a store
	 * that keeps several requests on the wire takes many at once. */
	unsigned max_many;
};

struct pager_params {
	uint64_t cache_pages; /* resident budget, pages of the paged range */
	int retry_ms;	      /* how long a lost store is retried (0: 30 s) */
	int readahead;	      /* pages read per fault (0: 16, -1: none) */
	/* Which pages are resident (and dirty) now, one bit a page of the
	 * range; NULL: ask the kernel (mincore). */
	const uint64_t *resident;
	bool quiet; /* start with eviction held back (pager_quiesce(p, false)) */
};

struct pager_stats {
	uint64_t resident;     /* pages resident now */
	uint64_t fetched;      /* pages read from the store */
	uint64_t fetched_zero; /* of which the store never had */
	uint64_t evicted;      /* pages dropped */
	uint64_t written;      /* pages written back (evictions and flushes) */
	uint64_t wp_faults;    /* first writes to clean pages */
	uint64_t reconnects;
	uint64_t fetch_p50_us, fetch_p99_us, fetch_max_us; /* fault -> placed */
};

struct pager;

/* Pages [base, base + nr_pages * 4096) from the store. Pages present now
 * (written before, e.g. a loaded image) count as resident and dirty; every
 * other page is fetched when touched. fetch_store serves the fault thread,
 * evict_store the evictor and flushes. 0 or -errno with why set. */
int pager_open(struct pager **out, void *base, uint64_t nr_pages, const struct pager_params *p,
	       const struct page_store_ops *ops, void *fetch_store, void *evict_store, char *why,
	       unsigned whylen);

/* Writes back the dirty pages whose bit (offset + page) is set in only
 * (NULL: every dirty page). They stay resident, writable and counted dirty:
 * the caller (a migration, with KVM's dirty log on) tracks what changes
 * after, so the guest's next write costs no write-protect fault. Pages
 * written back go to *written (may be NULL). 0 or -errno. */
int pager_flush(struct pager *p, const uint64_t *only, uint64_t offset, uint64_t *written);

/* Pages written since they were last stored; pager_dirty_bitmap also sets
 * their bits in bitmap, at bit offset + page. */
uint64_t pager_dirty(struct pager *p);
uint64_t pager_dirty_bitmap(struct pager *p, uint64_t *bitmap, uint64_t offset);

/* on: no eviction from now on, and none in flight when it returns (a
 * migration's pause: the dirty set then holds still); off: evict again. */
void pager_quiesce(struct pager *p, bool on);

/* Whether page gfn is resident now (a hint: it may go any moment; reading
 * a page that is not resident faults it in from the store). */
bool pager_page_resident(struct pager *p, uint64_t gfn);

/* The resident pages, up to max, oldest first; returns the count. */
uint64_t pager_resident(struct pager *p, uint64_t *gfn, uint64_t max);

/* Reads pages into RAM ahead of the guest (a prefetch of a hot list);
 * pages already resident are skipped. 0 or -errno. */
int pager_prefetch(struct pager *p, const uint64_t *gfn, uint64_t n);

void pager_stats(struct pager *p, struct pager_stats *s);

/* Non-zero (-errno) once the store has been unreachable for retry_ms; the
 * reason goes to why. */
int pager_failed(struct pager *p, char *why, unsigned whylen);

/* Stops the threads and unregisters. Only with the vCPUs stopped: pages
 * not resident read as zeros afterwards. */
void pager_close(struct pager *p);

#endif
