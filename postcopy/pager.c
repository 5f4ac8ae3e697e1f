// SPDX-License-Identifier: MIT
#include "pager.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/bitmap.h"
#include "common/log.h"
#include "common/util.h"
#include "uffd.h"

enum { MISSING, CLEAN, DIRTY, UNPROTECTING, BUSY };

#define MAX_BATCH 64  /* pages per fault's read */
#define MANY_MAX  512 /* pages per write-back and per prefetch read */

struct pager {
	struct uffd u;
	uint8_t *base;
	uint64_t nr_pages;
	struct pager_params prm;
	const struct page_store_ops *ops;
	void *fetch_store, *evict_store;
	unsigned batch, many, readahead;

	uint8_t *state; /* per page, atomic */
	uint8_t *ref;	/* per page: written since last passed over */

	/* Resident pages in arrival order: a ring of nr_pages entries (a page
	 * is in it at most once). */
	pthread_mutex_t lock;
	pthread_cond_t cond; /* evictor: over budget, or stop */
	uint64_t *fifo, head, count;
	bool stop;
	bool quiet; /* pager_quiesce: no eviction */

	pthread_mutex_t store_lock; /* evict_store: evictor, flush, prefetch */
	pthread_t evictor;
	bool evictor_started;

	uint64_t resident, fetched, fetched_zero, evicted, written, wp_faults, reconnects;
	int failed;
	char why[200];
	uint8_t buf[MAX_BATCH * 4096]; /* fault thread's fetch buffer */
	uint8_t pbuf[MANY_MAX * 4096]; /* prefetch buffer (store_lock) */
};

static bool cas(uint8_t *s, uint8_t from, uint8_t to)
{
	return __atomic_compare_exchange_n(s, &from, to, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static void fifo_push(struct pager *p, uint64_t gfn)
{
	pthread_mutex_lock(&p->lock);
	p->fifo[(p->head + p->count++) % p->nr_pages] = gfn;
	p->resident++;
	if (p->resident > p->prm.cache_pages)
		pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

static void fail(struct pager *p, int err, const char *what, void *store)
{
	pthread_mutex_lock(&p->lock);
	if (!p->failed) {
		p->failed = err;
		snprintf(p->why, sizeof(p->why), "%s: %s", what,
			 p->ops->why ? p->ops->why(store) : strerror(-err));
		log_err("remote memory: %s", p->why);
	}
	pthread_mutex_unlock(&p->lock);
}

/* Runs op on store until it succeeds, reconnecting after a failure, for
 * up to retry_ms. */
static int with_retry(struct pager *p, void *store, int (*op)(struct pager *, void *, void *),
		      void *arg, const char *what)
{
	uint64_t until = now_ns() + (uint64_t)p->prm.retry_ms * 1000000ULL;
	bool warned = false;

	for (;;) {
		int r = op(p, store, arg);
		if (!r)
			return 0;
		if (r != -ECONNRESET && r != -EPIPE && r != -ETIMEDOUT && r != -ECONNREFUSED &&
		    r != -ENOTCONN) {
			/* Refused (a newer owner, a full namespace): retrying
			 * will not help. */
			fail(p, r, what, store);
			return r;
		}
		if (!warned) {
			log_warn("remote memory: %s: %s; reconnecting", what,
				 p->ops->why ? p->ops->why(store) : strerror(-r));
			warned = true;
		}
		while (now_ns() < until) {
			int rc = p->ops->reconnect ? p->ops->reconnect(store) : r;
			if (!rc) {
				__atomic_fetch_add(&p->reconnects, 1, __ATOMIC_RELAXED);
				log_info("remote memory: connected again");
				break;
			}
			if (rc == -ESTALE || rc == -EACCES || rc == -ENOENT) {
				/* Back, but the namespace is not ours (any more). */
				fail(p, rc, "reconnecting", store);
				return rc;
			}
			usleep(100000);
		}
		if (now_ns() >= until) {
			fail(p, r, what, store);
			return r;
		}
	}
}

struct fetch_arg {
	const uint64_t *gfn;
	unsigned n;
	uint8_t *buf;
	bool *zero;
};

static int do_read(struct pager *p, void *store, void *arg)
{
	struct fetch_arg *a = arg;
	return p->ops->read(store, a->gfn, a->n, a->buf, a->zero);
}

/* Places fetched pages write-protected (clean); a page someone else placed
 * first is skipped. */
static int place_fetched(struct pager *p, const uint64_t *gfn, unsigned n, const uint8_t *buf,
			 const bool *zero)
{
	for (unsigned i = 0; i < n; i++) {
		/* A page the store never had is most likely being filled: it
		 * comes writable and dirty, which saves its first write a
		 * fault (and costs a write-back of zeros if it is dropped
		 * untouched). */
		uint8_t to = zero[i] ? DIRTY : CLEAN;
		if (!cas(&p->state[gfn[i]], MISSING, to))
			continue;
		int r = uffd_place_mode(&p->u, gfn[i], buf + (size_t)i * 4096, 1, to == CLEAN);
		if (r) {
			__atomic_store_n(&p->state[gfn[i]], MISSING, __ATOMIC_RELEASE);
			return r;
		}
		p->ref[gfn[i]] = 0;
		__atomic_fetch_add(&p->fetched, 1, __ATOMIC_RELAXED);
		if (zero[i])
			__atomic_fetch_add(&p->fetched_zero, 1, __ATOMIC_RELAXED);
		fifo_push(p, gfn[i]);
	}
	return 0;
}

/* The fault thread: a touched page that is missing. Its missing
 * neighbours after it come in the same request (readahead): a guest that
 * walks its memory pays one round trip per batch, not per page. */
static int request(void *opaque, uint64_t gfn)
{
	struct pager *p = opaque;
	uint64_t batch[MAX_BATCH];
	bool zero[MAX_BATCH];
	unsigned n = 0;

	for (;;) {
		uint8_t st = __atomic_load_n(&p->state[gfn], __ATOMIC_ACQUIRE);
		if (st == MISSING)
			break;
		if (st != BUSY) {
			uffd_wake(&p->u, gfn, 1); /* placed meanwhile */
			return 0;
		}
		/* Being dropped (gone, not yet marked missing): a moment.
		 * Returning now would leave the fault asked for and never
		 * answered. */
		sched_yield();
	}
	batch[n++] = gfn;
	while (n < p->readahead && gfn + n < p->nr_pages &&
	       __atomic_load_n(&p->state[gfn + n], __ATOMIC_ACQUIRE) == MISSING) {
		batch[n] = gfn + n;
		n++;
	}
	struct fetch_arg a = {.gfn = batch, .n = n, .buf = p->buf, .zero = zero};
	int r = with_retry(p, p->fetch_store, do_read, &a, "reading a page");
	return r ? r : place_fetched(p, batch, n, p->buf, zero);
}

/* The fault thread: the first write to a clean page. */
static void wp_fault(void *opaque, uint64_t gfn)
{
	struct pager *p = opaque;

	__atomic_fetch_add(&p->wp_faults, 1, __ATOMIC_RELAXED);
	if (cas(&p->state[gfn], CLEAN, UNPROTECTING)) {
		int r = uffd_protect(&p->u, gfn, 1, false); /* wakes the writer */
		if (r)
			log_err("remote memory: unprotecting page %llu: %s",
				(unsigned long long)gfn, strerror(-r));
		p->ref[gfn] = 1;
		__atomic_store_n(&p->state[gfn], DIRTY, __ATOMIC_RELEASE);
		return;
	}
	/* BUSY: whoever holds it wakes the writer when done; DIRTY: a late
	 * message, the page is writable already; MISSING: dropped, the
	 * writer faults again when woken. */
	if (__atomic_load_n(&p->state[gfn], __ATOMIC_ACQUIRE) != BUSY)
		uffd_wake(&p->u, gfn, 1);
}

/* How many of gfn[0..n) are neighbours of gfn[0], in order. */
static unsigned run_len(const uint64_t *gfn, unsigned n)
{
	unsigned k = 1;
	while (k < n && gfn[k] == gfn[0] + k)
		k++;
	return k;
}

struct write_arg {
	const uint64_t *gfn;
	unsigned n;
	const void *const *src;
};

static int do_write(struct pager *p, void *store, void *arg)
{
	struct write_arg *a = arg;
	return p->ops->write(store, a->gfn, a->n, a->src);
}

/* Writes back n BUSY pages (write-protected first, so they hold still);
 * store_lock held. */
static int write_back(struct pager *p, const uint64_t *gfn, unsigned n)
{
	const void *src[MANY_MAX];

	/* One ioctl a run of neighbours: each one flushes TLBs. */
	for (unsigned i = 0, k; i < n; i += k) {
		k = run_len(gfn + i, n - i);
		int r = uffd_protect(&p->u, gfn[i], k, true);
		if (r)
			return r;
	}
	for (unsigned i = 0; i < n; i++)
		src[i] = p->base + gfn[i] * 4096;
	if (!n)
		return 0;
	struct write_arg a = {.gfn = gfn, .n = n, .src = src};
	int r = with_retry(p, p->evict_store, do_write, &a, "writing pages back");
	if (!r)
		__atomic_fetch_add(&p->written, n, __ATOMIC_RELAXED);
	return r;
}

/* Ends a hold on pages kept resident: writable again (which wakes the
 * writers that waited) and dirty. */
static void release(struct pager *p, const uint64_t *gfn, unsigned n)
{
	for (unsigned i = 0, k; i < n; i += k) {
		k = run_len(gfn + i, n - i);
		uffd_protect(&p->u, gfn[i], k, false);
	}
	for (unsigned i = 0; i < n; i++)
		__atomic_store_n(&p->state[gfn[i]], DIRTY, __ATOMIC_RELEASE);
}

/* Drops BUSY pages the store holds. */
static void drop(struct pager *p, const uint64_t *gfn, unsigned n)
{
	/* MISSING only once the page is really gone: a readahead or prefetch
	 * that saw it missing earlier would place a copy that the drop then
	 * takes away behind the books' back. */
	for (unsigned i = 0; i < n; i++)
		uffd_forget(&p->u, gfn[i]);
	for (unsigned i = 0, k; i < n; i += k) {
		k = run_len(gfn + i, n - i);
		if (madvise(p->base + gfn[i] * 4096, (size_t)k * 4096, MADV_DONTNEED))
			log_err("remote memory: dropping pages %llu+%u: %s",
				(unsigned long long)gfn[i], k, strerror(errno));
		for (unsigned j = i; j < i + k; j++)
			__atomic_store_n(&p->state[gfn[j]], MISSING, __ATOMIC_RELEASE);
		uffd_wake(&p->u, gfn[i], k); /* writers that waited: fault again */
	}
	pthread_mutex_lock(&p->lock);
	p->resident -= n;
	pthread_mutex_unlock(&p->lock);
	__atomic_fetch_add(&p->evicted, n, __ATOMIC_RELAXED);
}

/* Takes up to max victims from the front of the ring: clean ones as they
 * come, dirty ones unless written since last passed over. */
static unsigned pick(struct pager *p, uint64_t *clean, unsigned *nclean, uint64_t *dirty,
		     unsigned max)
{
	unsigned nd = 0, nc = 0;

	pthread_mutex_lock(&p->lock);
	for (uint64_t seen = 0, n = p->count; seen < n && nc + nd < max; seen++) {
		uint64_t g = p->fifo[p->head];
		p->head = (p->head + 1) % p->nr_pages;
		p->count--;
		uint8_t *s = &p->state[g];
		if (cas(s, CLEAN, BUSY)) {
			clean[nc++] = g;
			continue;
		}
		if (!p->ref[g] && cas(s, DIRTY, BUSY)) {
			dirty[nd++] = g;
			continue;
		}
		p->ref[g] = 0; /* second chance */
		p->fifo[(p->head + p->count++) % p->nr_pages] = g;
	}
	pthread_mutex_unlock(&p->lock);
	*nclean = nc;
	return nd;
}

static void requeue(struct pager *p, const uint64_t *gfn, unsigned n)
{
	pthread_mutex_lock(&p->lock);
	for (unsigned i = 0; i < n; i++)
		p->fifo[(p->head + p->count++) % p->nr_pages] = gfn[i];
	pthread_mutex_unlock(&p->lock);
}

static void *evictor(void *arg)
{
	struct pager *p = arg;
	uint64_t clean[MANY_MAX], dirty[MANY_MAX];
	unsigned nc;

	thread_name("pager-evict");
	/* Evict down to a little under the budget, so that every fault does
	 * not wake the evictor. */
	uint64_t slack = MAX(p->prm.cache_pages / 32, 1);
	/* As many at once as the store takes, but not far under budget. */
	unsigned most = (unsigned)MIN((uint64_t)p->many, MAX(slack, (uint64_t)p->batch));

	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (!p->stop && (p->resident <= p->prm.cache_pages || p->failed || p->quiet))
			pthread_cond_wait(&p->cond, &p->lock);
		if (p->stop)
			break;
		bool busy = false;
		while (!p->stop && !p->failed && !p->quiet &&
		       p->resident + slack > p->prm.cache_pages) {
			pthread_mutex_unlock(&p->lock);
			pthread_mutex_lock(&p->store_lock);
			/* Quiesced while we waited for the store: not one more. */
			pthread_mutex_lock(&p->lock);
			bool quiet = p->quiet;
			pthread_mutex_unlock(&p->lock);
			unsigned nd = 0;
			nc = 0;
			if (!quiet) {
				nd = pick(p, clean, &nc, dirty, most);
				int r = write_back(p, dirty, nd);
				if (r) {
					release(p, dirty, nd);
					requeue(p, dirty, nd);
				} else {
					drop(p, dirty, nd);
				}
				drop(p, clean, nc);
			}
			pthread_mutex_unlock(&p->store_lock);
			pthread_mutex_lock(&p->lock);
			if (!nd && !nc) {
				busy = !quiet;
				break;
			}
		}
		if (busy) {
			/* Every resident page is in use: try again in a while
			 * rather than spin. */
			pthread_mutex_unlock(&p->lock);
			usleep(1000);
			pthread_mutex_lock(&p->lock);
		}
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

void pager_quiesce(struct pager *p, bool on)
{
	pthread_mutex_lock(&p->lock);
	p->quiet = on;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	if (on) {
		/* Wait out a write-back in flight. */
		pthread_mutex_lock(&p->store_lock);
		pthread_mutex_unlock(&p->store_lock);
	}
}

int pager_flush(struct pager *p, const uint64_t *only, uint64_t offset, uint64_t *written)
{
	uint64_t gfn[MANY_MAX], total = 0;
	int r = 0;

	pthread_mutex_lock(&p->store_lock);
	for (uint64_t g = 0; g < p->nr_pages && !r;) {
		unsigned n = 0;
		for (; g < p->nr_pages && n < p->many; g++) {
			uint64_t b = g + offset;
			if (only && !((only[b / 64] >> (b % 64)) & 1))
				continue;
			if (cas(&p->state[g], DIRTY, BUSY))
				gfn[n++] = g;
		}
		r = write_back(p, gfn, n);
		/* Stored or not, writable again at once (and dirty). */
		release(p, gfn, n);
		total += r ? 0 : n;
	}
	pthread_mutex_unlock(&p->store_lock);
	if (written)
		*written = total;
	return r;
}

uint64_t pager_dirty_bitmap(struct pager *p, uint64_t *bitmap, uint64_t offset)
{
	uint64_t n = 0;

	for (uint64_t g = 0; g < p->nr_pages; g++) {
		uint8_t st = __atomic_load_n(&p->state[g], __ATOMIC_RELAXED);
		if (st != DIRTY && st != UNPROTECTING)
			continue;
		n++;
		if (bitmap)
			bitmap[(g + offset) / 64] |= 1ULL << ((g + offset) % 64);
	}
	return n;
}

uint64_t pager_dirty(struct pager *p)
{
	return pager_dirty_bitmap(p, NULL, 0);
}

bool pager_page_resident(struct pager *p, uint64_t gfn)
{
	return gfn >= p->nr_pages || __atomic_load_n(&p->state[gfn], __ATOMIC_RELAXED) != MISSING;
}

uint64_t pager_resident(struct pager *p, uint64_t *gfn, uint64_t max)
{
	uint64_t n = 0;

	pthread_mutex_lock(&p->lock);
	for (; n < p->count && n < max; n++)
		gfn[n] = p->fifo[(p->head + n) % p->nr_pages];
	pthread_mutex_unlock(&p->lock);
	return n;
}

int pager_prefetch(struct pager *p, const uint64_t *gfn, uint64_t n)
{
	uint64_t batch[MANY_MAX];
	bool zero[MANY_MAX];
	int r = 0;

	pthread_mutex_lock(&p->store_lock);
	for (uint64_t i = 0; i < n && !r;) {
		unsigned k = 0;
		for (; i < n && k < p->many; i++)
			if (gfn[i] < p->nr_pages &&
			    __atomic_load_n(&p->state[gfn[i]], __ATOMIC_ACQUIRE) == MISSING)
				batch[k++] = gfn[i];
		if (!k)
			continue;
		struct fetch_arg a = {.gfn = batch, .n = k, .buf = p->pbuf, .zero = zero};
		r = with_retry(p, p->evict_store, do_read, &a, "prefetching pages");
		if (!r)
			r = place_fetched(p, batch, k, p->pbuf, zero);
	}
	pthread_mutex_unlock(&p->store_lock);
	return r;
}

void pager_stats(struct pager *p, struct pager_stats *s)
{
	uint64_t q[3];

	pthread_mutex_lock(&p->lock);
	s->resident = p->resident;
	pthread_mutex_unlock(&p->lock);
	s->fetched = __atomic_load_n(&p->fetched, __ATOMIC_RELAXED);
	s->fetched_zero = __atomic_load_n(&p->fetched_zero, __ATOMIC_RELAXED);
	s->evicted = __atomic_load_n(&p->evicted, __ATOMIC_RELAXED);
	s->written = __atomic_load_n(&p->written, __ATOMIC_RELAXED);
	s->wp_faults = __atomic_load_n(&p->wp_faults, __ATOMIC_RELAXED);
	s->reconnects = __atomic_load_n(&p->reconnects, __ATOMIC_RELAXED);
	uffd_latency_quantiles(&p->u, (const double[]){0.5, 0.99, 1.0}, q, 3);
	s->fetch_p50_us = q[0];
	s->fetch_p99_us = q[1];
	s->fetch_max_us = q[2];
}

int pager_failed(struct pager *p, char *why, unsigned whylen)
{
	pthread_mutex_lock(&p->lock);
	int r = p->failed;
	if (r && why)
		snprintf(why, whylen, "%s", p->why);
	pthread_mutex_unlock(&p->lock);
	return r;
}

/* A page resident before the pager: written here, never stored. */
static void resident_dirty(struct pager *p, uint64_t g)
{
	p->state[g] = DIRTY;
	uffd_mark_present(&p->u, g, 1);
	fifo_push(p, g);
}

int pager_open(struct pager **out, void *base, uint64_t nr_pages, const struct pager_params *prm,
	       const struct page_store_ops *ops, void *fetch_store, void *evict_store, char *why,
	       unsigned whylen)
{
	struct pager *p = calloc(1, sizeof(*p));
	int r;

	*out = NULL;
	if (!p)
		return -ENOMEM;
	p->u.fd = p->u.stop_fd = -1;
	p->base = base;
	p->nr_pages = nr_pages;
	p->prm = *prm;
	if (!p->prm.retry_ms)
		p->prm.retry_ms = 30000;
	p->ops = ops;
	p->fetch_store = fetch_store;
	p->evict_store = evict_store;
	p->batch = MIN(MAX(ops->max_batch, 1u), MAX_BATCH);
	p->many = ops->max_many ? MIN(ops->max_many, MANY_MAX) : p->batch;
	p->quiet = prm->quiet;
	p->readahead = prm->readahead < 0 ? 1 : prm->readahead ? (unsigned)prm->readahead : 16;
	p->readahead = MIN(MAX(p->readahead, 1u), p->batch);
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->store_lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	p->state = calloc(nr_pages, 1);
	p->ref = calloc(nr_pages, 1);
	p->fifo = calloc(nr_pages, sizeof(*p->fifo));
	/* Told which pages are resident: no need to ask the kernel. */
	unsigned char *vec = prm->resident ? NULL : calloc(nr_pages, 1);
	if (!p->state || !p->ref || !p->fifo || (!vec && !prm->resident)) {
		free(vec);
		pager_close(p);
		return -ENOMEM;
	}
	/* Pages written before (the image) stay, resident and dirty. Huge
	 * pages would bring in 2 MiB at a fault and could not be dropped
	 * page by page. */
	madvise(base, nr_pages * 4096, MADV_NOHUGEPAGE);
	r = vec && mincore(base, nr_pages * 4096, vec) ? -errno : 0;
	if (!r)
		r = uffd_open(&p->u, base, nr_pages, UFFD_OPEN_WP);
	if (r) {
		snprintf(why, whylen, "userfaultfd with write protection: %s%s", strerror(-r),
			 r == -EPERM ? " (needs root or vm.unprivileged_userfaultfd=1)" : "");
		free(vec);
		pager_close(p);
		return r;
	}
	uint64_t g;
	if (vec) {
		for (g = 0; g < nr_pages; g++)
			if (vec[g] & 1)
				resident_dirty(p, g);
	} else {
		bitmap_for_each_set(g, prm->resident, nr_pages) resident_dirty(p, g);
	}
	free(vec);
	p->u.wp_fault = wp_fault;
	static const struct page_source_ops store_source = {.name = "page store",
							    .request = request};
	r = uffd_start(&p->u, &store_source, p);
	if (!r) {
		r = -pthread_create(&p->evictor, NULL, evictor, p);
		p->evictor_started = !r;
	}
	if (r) {
		snprintf(why, whylen, "starting the pager threads: %s", strerror(-r));
		pager_close(p);
		return r;
	}
	*out = p;
	return 0;
}

void pager_close(struct pager *p)
{
	if (!p)
		return;
	if (p->evictor_started) {
		pthread_mutex_lock(&p->lock);
		p->stop = true;
		pthread_cond_signal(&p->cond);
		pthread_mutex_unlock(&p->lock);
		pthread_join(p->evictor, NULL);
	}
	uffd_close(&p->u);
	free(p->state);
	free(p->ref);
	free(p->fifo);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->store_lock);
	pthread_cond_destroy(&p->cond);
	free(p);
}
