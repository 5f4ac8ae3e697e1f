// SPDX-License-Identifier: MIT
#include "mem.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

int mem_backing_parse(const char *s, enum mem_backing *out)
{
	if (!strcmp(s, "anon"))
		*out = MEM_ANON;
	else if (!strcmp(s, "memfd"))
		*out = MEM_MEMFD;
	else
		return -EINVAL;
	return 0;
}

const char *mem_backing_name(enum mem_backing b)
{
	return b == MEM_MEMFD ? "memfd" : "anon";
}

int mem_create(struct guest_mem *m, uint64_t size, enum mem_backing backing)
{
	struct mem_region *r = &m->regions[0];
	int fd = -1, err;
	void *p;

	memset(m, 0, sizeof(*m));
	r->fd = -1;
	if (!size || !IS_ALIGNED(size, 2 * MiB))
		return -EINVAL;
	if (backing == MEM_MEMFD) {
		fd = memfd_create("flit-guest-ram", MFD_CLOEXEC);
		if (fd < 0) {
			err = -errno;
			log_err("memfd_create: %s", strerror(errno));
			return err;
		}
		if (ftruncate(fd, (off_t)size)) {
			err = -errno;
			log_err("sizing guest RAM memfd: %s", strerror(errno));
			close(fd);
			return err;
		}
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
		if (p != MAP_FAILED) {
			void *a = mmap(NULL, size, PROT_READ | PROT_WRITE,
				       MAP_SHARED | MAP_NORESERVE, fd, 0);
			if (a == MAP_FAILED) {
				munmap(p, size);
				p = MAP_FAILED;
			} else {
				madvise(a, size, MADV_DONTDUMP);
				r->alias = a;
			}
		}
	} else {
		p = mmap(NULL, size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	}
	if (p == MAP_FAILED) {
		err = -errno;
		log_err("mapping %llu bytes of guest RAM: %s", (unsigned long long)size,
			strerror(errno));
		if (fd >= 0)
			close(fd);
		return err;
	}
	/* Guest RAM never goes into core dumps: it may be large and private. */
	madvise(p, size, MADV_DONTDUMP);
	/* Transparent huge pages where the host allows: one fault per 2 MiB
	 * instead of 512 (a migration's destination writes all of RAM at once),
	 * fewer TLB misses. Dirty tracking stays per 4 KiB page (KVM maps the
	 * guest at 4 KiB while logging). */
	if (backing == MEM_ANON)
		madvise(p, size, MADV_HUGEPAGE);
	r->gpa = 0;
	r->size = size;
	r->hva = p;
	r->fd = fd;
	r->backing = backing;
	m->nr_regions = 1;
	m->size = size;
	return 0;
}

void mem_destroy(struct guest_mem *m)
{
	for (unsigned i = 0; i < m->nr_regions; i++) {
		struct mem_region *r = &m->regions[i];
		if (r->hva)
			munmap(r->hva, r->size);
		if (r->alias)
			munmap(r->alias, r->size);
		if (r->fd >= 0)
			close(r->fd);
	}
	memset(m, 0, sizeof(*m));
}

void *mem_gpa_to_hva(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < m->nr_regions; i++) {
		const struct mem_region *r = &m->regions[i];
		if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
			return r->hva + (gpa - r->gpa);
	}
	return NULL;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

int mem_prealloc(struct guest_mem *m)
{
	uint64_t t0 = now_ns();

	for (unsigned i = 0; i < m->nr_regions; i++) {
		struct mem_region *r = &m->regions[i];
		/* The alias's page-table entries too: post-copy then writes
		 * arriving pages through it without a fault per page. */
		if (r->alias && madvise(r->alias, r->size, MADV_POPULATE_WRITE) &&
		    errno != EINVAL) {
			int err = -errno;
			log_err("preallocating guest RAM: %s", strerror(errno));
			return err;
		}
		if (!madvise(r->hva, r->size, MADV_POPULATE_WRITE))
			continue;
		if (errno != EINVAL) {
			int err = -errno;
			log_err("preallocating guest RAM: %s", strerror(errno));
			return err;
		}
		/* An older kernel: touch every page (RAM is still all zero). */
		for (uint64_t off = 0; off < r->size; off += 4096)
			__atomic_store_n(&r->hva[off], 0, __ATOMIC_RELAXED);
	}
	log_debug("guest RAM preallocated in %.1f ms", (double)(now_ns() - t0) / 1e6);
	return 0;
}
