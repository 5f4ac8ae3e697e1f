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

int uffd_open(struct uffd *u, void *base, uint64_t nr_pages, unsigned flags)
{
	memset(u, 0, sizeof(*u));
	u->fd = u->stop_fd = -1;
	u->base = base;
	u->nr_pages = nr_pages;
	/* Not UFFD_USER_MODE_ONLY: KVM reaches guest RAM from the kernel. */
	u->fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (u->fd < 0)
		return -errno;
	bool wp = flags & UFFD_OPEN_WP;
	struct uffdio_api api = {.api = UFFD_API,
				 .features = wp ? UFFD_FEATURE_PAGEFAULT_FLAG_WP : 0};
	if (ioctl(u->fd, UFFDIO_API, &api))
		goto fail;
	struct uffdio_register reg = {.range = {.start = (uintptr_t)base, .len = nr_pages * 4096},
				      .mode = UFFDIO_REGISTER_MODE_MISSING |
					      (wp ? UFFDIO_REGISTER_MODE_WP : 0)};
	if (ioctl(u->fd, UFFDIO_REGISTER, &reg))
		goto fail;
	uint64_t need = (1ULL << _UFFDIO_COPY) | (wp ? 1ULL << _UFFDIO_WRITEPROTECT : 0);
	if ((reg.ioctls & need) != need) {
		errno = ENOTSUP;
		goto fail;
	}
	u->placed = bitmap_alloc(nr_pages);
	u->fault_ns = calloc(nr_pages, sizeof(*u->fault_ns));
	u->lat_us = calloc(nr_pages, sizeof(*u->lat_us));
	u->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (!u->placed || !u->fault_ns || !u->lat_us || u->stop_fd < 0) {
		errno = ENOMEM;
		goto fail;
	}
	return 0;
fail:;
	int r = -errno;
	uffd_close(u);
	return r;
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
	for (uint64_t g = gfn; g < gfn + count && g < u->nr_pages; g++)
		if (!atomic_test(u->placed, g))
			placed(u, g);
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
	__atomic_fetch_sub(&u->nr_placed, 1, __ATOMIC_RELEASE);
}

int uffd_place(struct uffd *u, uint64_t gfn, const void *src, uint32_t count)
{
	return uffd_place_mode(u, gfn, src, count, false);
}

int uffd_place_mode(struct uffd *u, uint64_t gfn, const void *src, uint32_t count, bool wp)
{
	const uint8_t *s = src;

	if (gfn >= u->nr_pages || count > u->nr_pages - gfn)
		return -ERANGE;
	while (count) {
		struct uffdio_copy c = {.dst = (uintptr_t)(u->base + gfn * 4096),
					.src = (uintptr_t)s,
					.len = (uint64_t)count * 4096,
					.mode = wp ? UFFDIO_COPY_MODE_WP : 0};
		int r = ioctl(u->fd, UFFDIO_COPY, &c);
		uint64_t done = c.copy > 0 ? (uint64_t)c.copy / 4096 : 0;
		for (uint64_t i = 0; i < done; i++)
			placed(u, gfn + i);
		gfn += done;
		s += done * 4096;
		count -= (uint32_t)done;
		if (!r)
			break;
		if (errno == EAGAIN)
			continue; /* the mapping changed under us: again */
		if (errno != EEXIST)
			return -errno;
		/* The next page is there already (a push and a fault's answer
		 * met): skip it, and wake whoever might wait on it. */
		placed(u, gfn);
		uffd_wake(u, gfn, 1);
		gfn++;
		s += 4096;
		count--;
	}
	return 0;
}

int uffd_place_zero(struct uffd *u, uint64_t gfn)
{
	if (gfn >= u->nr_pages)
		return -ERANGE;
	for (;;) {
		struct uffdio_zeropage z = {
		    .range = {.start = (uintptr_t)(u->base + gfn * 4096), .len = 4096}};
		if (!ioctl(u->fd, UFFDIO_ZEROPAGE, &z))
			break;
		if (errno == EAGAIN)
			continue;
		if (errno != EEXIST)
			return -errno;
		uffd_wake(u, gfn, 1);
		break;
	}
	placed(u, gfn);
	return 0;
}

static void *fault_thread(void *arg)
{
	struct uffd *u = arg;
	struct uffd_msg msg[64];

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
					uffd_wake(u, gfn, 1);
				continue;
			}
			__atomic_fetch_add(&u->faults, 1, __ATOMIC_RELAXED);
			int r = u->request(u->opaque, gfn);
			if (r) {
				log_err("userfaultfd: asking for page %llu: %s",
					(unsigned long long)gfn, strerror(-r));
				u->err = r;
			}
		}
	}
	return NULL;
}

int uffd_start(struct uffd *u, int (*request)(void *opaque, uint64_t gfn), void *opaque)
{
	u->request = request;
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
	free(u->fault_ns);
	free(u->lat_us);
	u->placed = u->fault_ns = NULL;
	u->lat_us = NULL;
	u->fd = u->stop_fd = -1;
}
