// SPDX-License-Identifier: MIT
#include "uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/bitmap.h"
#include "common/log.h"
#include "common/util.h"

static bool test_and_set(uint64_t *bm, uint64_t bit)
{
	uint64_t m = 1ULL << (bit % 64);
	return __atomic_fetch_or(&bm[bit / 64], m, __ATOMIC_ACQ_REL) & m;
}

static bool atomic_test(const uint64_t *bm, uint64_t bit)
{
	return __atomic_load_n(&bm[bit / 64], __ATOMIC_ACQUIRE) & (1ULL << (bit % 64));
}

/* features for a mode, asked of UFFDIO_API */
static uint64_t features(bool wp, bool minor)
{
	return (wp ? UFFD_FEATURE_PAGEFAULT_FLAG_WP : 0) |
	       (minor ? UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM : 0);
}

static int new_fd(bool wp, bool minor)
{
	/* Not UFFD_USER_MODE_ONLY: KVM reaches guest RAM from the kernel. */
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	struct uffdio_api api = {.api = UFFD_API, .features = features(wp, minor)};
	if (ioctl(fd, UFFDIO_API, &api)) {
		/* A feature this kernel lacks. */
		int r = errno == EINVAL ? -ENOTSUP : -errno;
		close(fd);
		return r;
	}
	return fd;
}

int uffd_probe(bool minor)
{
	int fd = new_fd(false, minor);
	if (fd < 0)
		return fd;
	close(fd);
	return 0;
}

static int open_mode(struct uffd *u, void *base, void *alias, uint64_t nr_pages, unsigned flags)
{
	bool wp = flags & UFFD_OPEN_WP, minor = alias != NULL;

	memset(u, 0, sizeof(*u));
	u->fd = u->stop_fd = -1;
	u->base = base;
	u->nr_pages = nr_pages;
	u->fd = new_fd(wp, minor);
	if (u->fd < 0) {
		int r = u->fd;
		u->fd = -1;
		return r;
	}
	struct uffdio_register reg = {.range = {.start = (uintptr_t)base, .len = nr_pages * 4096},
				      .mode = UFFDIO_REGISTER_MODE_MISSING |
					      (wp ? UFFDIO_REGISTER_MODE_WP : 0) |
					      (minor ? UFFDIO_REGISTER_MODE_MINOR : 0)};
	if (ioctl(u->fd, UFFDIO_REGISTER, &reg))
		goto fail;
	uint64_t need = (minor ? 1ULL << _UFFDIO_CONTINUE : 1ULL << _UFFDIO_COPY) |
			(wp ? 1ULL << _UFFDIO_WRITEPROTECT : 0);
	if ((reg.ioctls & need) != need) {
		errno = ENOTSUP;
		goto fail;
	}
	u->placed = bitmap_alloc(nr_pages);
	u->fault_ns = calloc(nr_pages, sizeof(*u->fault_ns));
	u->lat_us = calloc(nr_pages, sizeof(*u->lat_us));
	u->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (minor) {
		u->alias = alias;
		u->claimed = bitmap_alloc(nr_pages);
	}
	if (!u->placed || !u->fault_ns || !u->lat_us || u->stop_fd < 0 || (minor && !u->claimed)) {
		errno = ENOMEM;
		goto fail;
	}
	return 0;
fail:;
	int r = -errno;
	uffd_close(u);
	return r;
}

int uffd_open(struct uffd *u, void *base, uint64_t nr_pages, unsigned flags)
{
	return open_mode(u, base, NULL, nr_pages, flags);
}

int uffd_open_minor(struct uffd *u, void *base, void *alias, uint64_t nr_pages)
{
	return alias ? open_mode(u, base, alias, nr_pages, 0) : -EINVAL;
}

static void placed(struct uffd *u, uint64_t gfn)
{
	if (test_and_set(u->placed, gfn)) {
		__atomic_fetch_add(&u->eexist, 1, __ATOMIC_RELAXED);
		return;
	}
	/* A page someone waited for: how long they waited. */
	uint64_t t0 = __atomic_exchange_n(&u->fault_ns[gfn], UFFD_PLACED, __ATOMIC_ACQ_REL);
	if (t0 > UFFD_PLACED) {
		uint64_t us = (now_ns() - t0) / 1000;
		uint64_t i = __atomic_fetch_add(&u->nr_lat, 1, __ATOMIC_RELAXED);
		if (i < u->nr_pages)
			u->lat_us[i] = (uint32_t)MIN(us, UINT32_MAX);
		__atomic_fetch_add(&u->pulled, 1, __ATOMIC_RELAXED);
	}
	__atomic_fetch_add(&u->nr_placed, 1, __ATOMIC_RELEASE);
}

void uffd_mark_present(struct uffd *u, uint64_t gfn, uint64_t count)
{
	for (uint64_t g = gfn; g < gfn + count && g < u->nr_pages; g++) {
		if (u->claimed)
			test_and_set(u->claimed, g);
		if (!atomic_test(u->placed, g))
			placed(u, g);
	}
}

void uffd_mark_present_bitmap(struct uffd *u, const uint64_t *bm)
{
	uint64_t words = BITMAP_WORDS(u->nr_pages), n = 0;

	for (uint64_t w = 0; w < words; w++) {
		uint64_t m = bm[w];
		if (w == words - 1 && u->nr_pages % 64)
			m &= (1ULL << (u->nr_pages % 64)) - 1;
		/* A page present from the start was never waited for: its
		 * fault time stays 0, and it never faults while present. */
		uint64_t old = __atomic_fetch_or(&u->placed[w], m, __ATOMIC_ACQ_REL);
		n += (uint64_t)__builtin_popcountll(m & ~old);
	}
	__atomic_fetch_add(&u->nr_placed, n, __ATOMIC_RELEASE);
}

void uffd_wake(struct uffd *u, uint64_t gfn, uint64_t count)
{
	struct uffdio_range r = {.start = (uintptr_t)(u->base + gfn * 4096), .len = count * 4096};
	ioctl(u->fd, UFFDIO_WAKE, &r);
}

int uffd_protect(struct uffd *u, uint64_t gfn, uint64_t count, bool on)
{
	struct uffdio_writeprotect w = {
	    .range = {.start = (uintptr_t)(u->base + gfn * 4096), .len = count * 4096},
	    .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0};
	if (gfn >= u->nr_pages || count > u->nr_pages - gfn)
		return -ERANGE;
	while (ioctl(u->fd, UFFDIO_WRITEPROTECT, &w))
		if (errno != EAGAIN)
			return -errno;
	return 0;
}

void uffd_forget(struct uffd *u, uint64_t gfn)
{
	uint64_t m = 1ULL << (gfn % 64);
	if (!(__atomic_fetch_and(&u->placed[gfn / 64], ~m, __ATOMIC_ACQ_REL) & m))
		return;
	__atomic_store_n(&u->fault_ns[gfn], 0, __ATOMIC_RELEASE);
	if (u->claimed)
		__atomic_fetch_and(&u->claimed[gfn / 64], ~m, __ATOMIC_ACQ_REL);
	__atomic_fetch_sub(&u->nr_placed, 1, __ATOMIC_RELEASE);
}

enum fill_op { FILL_COPY, FILL_ZERO, FILL_CONTINUE };

/* MINOR: a page's data (zeros if src is NULL) into the alias. */
static void write_alias(struct uffd *u, uint64_t gfn, const uint8_t *src)
{
	if (src)
		memcpy(uffd_alias(u, gfn), src, 4096);
	else
		memset(uffd_alias(u, gfn), 0, 4096);
}

/* Fills [gfn, gfn + count) with one kind of ioctl, DONTWAKE: counts each
 * page placed, skips (and counts once) a page that is there already
 * (EEXIST), retries where the mapping changed under it (EAGAIN). Wakes
 * nobody: the caller wakes the run once. */
static int fill(struct uffd *u, enum fill_op op, uint64_t gfn, const uint8_t *src, uint64_t count,
		bool wp)
{
	while (count) {
		uint64_t dst = (uintptr_t)(u->base + gfn * 4096), len = count * 4096;
		int64_t bytes;
		int r;
		switch (op) {
		case FILL_COPY: {
			struct uffdio_copy c = {.dst = dst,
						.src = (uintptr_t)src,
						.len = len,
						.mode = UFFDIO_COPY_MODE_DONTWAKE |
							(wp ? UFFDIO_COPY_MODE_WP : 0)};
			r = ioctl(u->fd, UFFDIO_COPY, &c);
			bytes = c.copy;
			break;
		}
		case FILL_ZERO: {
			struct uffdio_zeropage z = {.range = {.start = dst, .len = len},
						    .mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE};
			r = ioctl(u->fd, UFFDIO_ZEROPAGE, &z);
			bytes = z.zeropage;
			break;
		}
		default: {
			struct uffdio_continue c = {.range = {.start = dst, .len = len},
						    .mode = UFFDIO_CONTINUE_MODE_DONTWAKE};
			r = ioctl(u->fd, UFFDIO_CONTINUE, &c);
			bytes = c.mapped;
			break;
		}
		}
		int err = r ? errno : 0;
		uint64_t done = bytes > 0 ? MIN((uint64_t)bytes / 4096, count) : 0;
		for (uint64_t i = 0; i < done; i++)
			placed(u, gfn + i);
		gfn += done;
		if (src)
			src += done * 4096;
		count -= done;
		if (!r)
			break;
		if (err == EAGAIN)
			continue; /* the mapping changed under us, or a part done: again */
		if (err != EEXIST)
			return -err;
		if (u->alias && op != FILL_CONTINUE) {
			/* MINOR mode, a page taken for a hole that is in the
			 * page cache after all (swapped back in, say): the
			 * caller owns it, so through the alias. */
			write_alias(u, gfn, src);
			r = fill(u, FILL_CONTINUE, gfn, NULL, 1, false);
			if (r)
				return r;
		} else {
			/* The next page is there already (a push and a fault's
			 * answer met): skip it; the caller's wake covers its
			 * waiters. */
			placed(u, gfn);
		}
		gfn++;
		if (src)
			src += 4096;
		count--;
	}
	return 0;
}

void uffd_claim(struct uffd *u, uint64_t gfn, uint32_t count, uint64_t *mine)
{
	for (uint32_t i = 0; i < count; i++)
		if (!test_and_set(u->claimed, gfn + i))
			mine[i / 64] |= 1ULL << (i % 64);
}

void uffd_unclaim(struct uffd *u, uint64_t gfn, uint32_t count, const uint64_t *mine)
{
	for (uint32_t i = 0; i < count; i++) {
		uint64_t g = gfn + i;
		if ((mine[i / 64] >> (i % 64) & 1) && !atomic_test(u->placed, g))
			__atomic_fetch_and(&u->claimed[g / 64], ~(1ULL << (g % 64)),
					   __ATOMIC_ACQ_REL);
	}
}

int uffd_continue(struct uffd *u, uint64_t gfn, uint32_t count, const uint64_t *mine)
{
	int r = 0;

	if (gfn >= u->nr_pages || count > u->nr_pages - gfn)
		return -ERANGE;
	for (uint32_t i = 0, k; i < count && !r; i += k) {
		bool won = mine[i / 64] >> (i % 64) & 1;
		for (k = 1;
		     i + k < count && (bool)(mine[(i + k) / 64] >> ((i + k) % 64) & 1) == won; k++)
			;
		if (won) {
			r = fill(u, FILL_CONTINUE, gfn + i, NULL, k, false);
		} else {
			/* Another writer has them (placed, or on the way):
			 * theirs to map and to count. */
			__atomic_fetch_add(&u->eexist, k, __ATOMIC_RELAXED);
		}
	}
	if (r)
		uffd_unclaim(u, gfn, count, mine);
	uffd_wake(u, gfn, count);
	return r;
}

/* Which of n pages (at most 64) from gfn are in the page cache: bit i for
 * gfn + i (all of them if the kernel cannot tell). */
static uint64_t in_cache(struct uffd *u, uint64_t gfn, uint32_t n)
{
	unsigned char vec[64];
	uint64_t m = 0;

	if (mincore(uffd_alias(u, gfn), (size_t)n * 4096, vec))
		return ~0ULL;
	for (uint32_t i = 0; i < n; i++)
		m |= (uint64_t)(vec[i] & 1) << i;
	return m;
}

bool uffd_cached(struct uffd *u, uint64_t gfn, uint32_t count)
{
	for (uint32_t i = 0; i < count; i += 64) {
		uint32_t n = MIN(count - i, 64);
		uint64_t all = n == 64 ? ~0ULL : (1ULL << n) - 1;
		if ((in_cache(u, gfn + i, n) & all) != all)
			return false;
	}
	return true;
}

/* MINOR: claims, places what it won (from src, or zeros if src is NULL),
 * 64 pages at a time. A page in the page cache (a stale copy, a
 * preallocated zero) is written through the alias and mapped with
 * UFFDIO_CONTINUE; a hole is filled with UFFDIO_COPY or UFFDIO_ZEROPAGE
 * (MISSING is registered too), which allocates the page without zeroing
 * it first and without a fault on the alias. */
static int place_minor(struct uffd *u, uint64_t gfn, const uint8_t *src, uint64_t count)
{
	int r = 0;

	while (count && !r) {
		uint32_t n = (uint32_t)MIN(count, 64);
		uint64_t mine = 0;
		uffd_claim(u, gfn, n, &mine);
		uint64_t cached = mine ? in_cache(u, gfn, n) : 0;
		for (uint32_t i = 0, k; i < n && !r; i += k) {
			bool won = mine >> i & 1, c = cached >> i & 1;
			for (k = 1; i + k < n && (bool)(mine >> (i + k) & 1) == won &&
				    (!won || (bool)(cached >> (i + k) & 1) == c);
			     k++)
				;
			const uint8_t *s = src ? src + (size_t)i * 4096 : NULL;
			if (!won) {
				/* Another writer has them (placed, or on the
				 * way): theirs to map and to count. */
				__atomic_fetch_add(&u->eexist, k, __ATOMIC_RELAXED);
			} else if (!c) {
				r = fill(u, src ? FILL_COPY : FILL_ZERO, gfn + i, s, k, false);
			} else {
				for (uint32_t j = 0; j < k; j++)
					write_alias(u, gfn + i + j,
						    s ? s + (size_t)j * 4096 : NULL);
				r = fill(u, FILL_CONTINUE, gfn + i, NULL, k, false);
			}
		}
		if (r)
			uffd_unclaim(u, gfn, n, &mine);
		uffd_wake(u, gfn, n);
		gfn += n;
		if (src)
			src += (size_t)n * 4096;
		count -= n;
	}
	return r;
}

int uffd_place(struct uffd *u, uint64_t gfn, const void *src, uint32_t count)
{
	return uffd_place_mode(u, gfn, src, count, false);
}

int uffd_place_mode(struct uffd *u, uint64_t gfn, const void *src, uint32_t count, bool wp)
{
	if (gfn >= u->nr_pages || count > u->nr_pages - gfn)
		return -ERANGE;
	if (u->alias)
		return wp ? -EINVAL : place_minor(u, gfn, src, count);
	int r = fill(u, FILL_COPY, gfn, src, count, wp);
	uffd_wake(u, gfn, count);
	return r;
}

int uffd_place_zeros(struct uffd *u, uint64_t gfn, uint64_t count)
{
	if (gfn >= u->nr_pages || count > u->nr_pages - gfn)
		return -ERANGE;
	if (u->alias)
		return place_minor(u, gfn, NULL, count);
	int r = fill(u, FILL_ZERO, gfn, NULL, count, false);
	uffd_wake(u, gfn, count);
	return r;
}

/* A fault on a page that is placed: its waiters only need waking. In MINOR
 * mode its page-table entry may have gone since (reclaim) while the page
 * cache holds it: map it again first. */
static void resolve_placed(struct uffd *u, uint64_t gfn)
{
	if (u->alias) {
		struct uffdio_continue c = {
		    .range = {.start = (uintptr_t)(u->base + gfn * 4096), .len = 4096},
		    .mode = UFFDIO_CONTINUE_MODE_DONTWAKE};
		while (ioctl(u->fd, UFFDIO_CONTINUE, &c) && errno == EAGAIN)
			;
	}
	uffd_wake(u, gfn, 1);
}

static void *fault_thread(void *arg)
{
	struct uffd *u = arg;
	struct uffd_msg msg[64];

	thread_name("uffd-fault");
	thread_latency(true); /* a vCPU waits on every wake-up of this thread */

	for (;;) {
		struct pollfd p[2] = {{.fd = u->fd, .events = POLLIN},
				      {.fd = u->stop_fd, .events = POLLIN}};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			u->err = -errno;
			break;
		}
		if (p[1].revents)
			break;
		ssize_t n = read(u->fd, msg, sizeof(msg));
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			u->err = -errno;
			break;
		}
		uint64_t now = now_ns();
		for (size_t i = 0; i < (size_t)n / sizeof(msg[0]); i++) {
			if (msg[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			uint64_t addr = msg[i].arg.pagefault.address & ~4095ULL;
			uint64_t gfn = (addr - (uintptr_t)u->base) / 4096;
			if (gfn >= u->nr_pages)
				continue;
			if (msg[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
				/* A write to a protected page: its owner decides
				 * (no owner: nothing protects pages on purpose). */
				if (u->wp_fault)
					u->wp_fault(u->opaque, gfn);
				else
					uffd_protect(u, gfn, 1, false);
				continue;
			}
			/* The first fault on a page that is not there asks for
			 * it; a later one waits for the same answer; a page
			 * placed meanwhile only needs its waiters woken. */
			uint64_t expect = 0;
			if (!__atomic_compare_exchange_n(&u->fault_ns[gfn], &expect, now, false,
							 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
				if (expect == UFFD_PLACED)
					resolve_placed(u, gfn);
				continue;
			}
			__atomic_fetch_add(&u->faults, 1, __ATOMIC_RELAXED);
			int r = u->src->request(u->opaque, gfn);
			if (r) {
				log_err("userfaultfd: asking for page %llu: %s",
					(unsigned long long)gfn, strerror(-r));
				u->err = r;
			}
		}
	}
	return NULL;
}

int uffd_start(struct uffd *u, const struct page_source_ops *src, void *opaque)
{
	u->src = src;
	u->opaque = opaque;
	int r = -pthread_create(&u->thread, NULL, fault_thread, u);
	u->started = !r;
	return r;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

void uffd_latency_quantiles(struct uffd *u, const double *q, uint64_t *out, unsigned n)
{
	uint64_t k = MIN(__atomic_load_n(&u->nr_lat, __ATOMIC_ACQUIRE), u->nr_pages);

	qsort(u->lat_us, k, sizeof(*u->lat_us), cmp_u32);
	for (unsigned i = 0; i < n; i++) {
		if (!k) {
			out[i] = 0;
			continue;
		}
		uint64_t at = (uint64_t)(q[i] * (double)(k - 1) + 0.5);
		out[i] = u->lat_us[MIN(at, k - 1)];
	}
}

void uffd_close(struct uffd *u)
{
	if (u->started) {
		uint64_t one = 1;
		if (write(u->stop_fd, &one, sizeof(one)) < 0)
			log_warn("post-copy: stopping the fault thread: %s", strerror(errno));
		pthread_join(u->thread, NULL);
		u->started = false;
	}
	if (u->fd >= 0) {
		struct uffdio_range r = {.start = (uintptr_t)u->base, .len = u->nr_pages * 4096};
		ioctl(u->fd, UFFDIO_UNREGISTER, &r);
		close(u->fd);
	}
	if (u->stop_fd >= 0)
		close(u->stop_fd);
	free(u->placed);
	free(u->claimed);
	free(u->fault_ns);
	free(u->lat_us);
	u->placed = u->fault_ns = u->claimed = NULL;
	u->alias = NULL;
	u->lat_us = NULL;
	u->fd = u->stop_fd = -1;
}
