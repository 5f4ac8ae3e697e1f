/* SPDX-License-Identifier: MIT */
/*
 * Guest memory: regions of host memory mapped at guest-physical addresses.
 * A region has a backing: 'anon' (private anonymous memory) or 'memfd'
 * (shared memory with a file descriptor, so another process or a second VM
 * can map the same RAM). Pages are 4 KiB.
 *
 * A memfd region is mapped twice: hva, the guest's view (KVM's memory
 * slots, the VMM's reads and writes), and alias, a second shared mapping
 * of the same pages that nothing else watches. Post-copy registers hva with
 * userfaultfd (MINOR faults) and writes arriving pages through alias
 * before mapping them into hva.
 */
#ifndef FLIT_VMM_MEM_H
#define FLIT_VMM_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mem_backing { MEM_ANON, MEM_MEMFD };

struct mem_region {
	uint64_t gpa;
	uint64_t size;
	uint8_t *hva;
	int fd;		/* memfd, or -1 */
	uint8_t *alias; /* memfd: the second mapping of the same pages; else NULL */
	enum mem_backing backing;
};

#define MEM_MAX_REGIONS 4

struct guest_mem {
	struct mem_region regions[MEM_MAX_REGIONS];
	unsigned nr_regions;
	uint64_t size; /* bytes from GPA 0, all regions */
};

/* "anon" or "memfd" -> backing; -EINVAL otherwise. */
int mem_backing_parse(const char *s, enum mem_backing *out);
const char *mem_backing_name(enum mem_backing b);

/* Allocate one region covering [0, size). size must be a multiple of 2 MiB.
 * -ENOMEM with a logged reason when the host cannot provide it. */
int mem_create(struct guest_mem *m, uint64_t size, enum mem_backing backing);
/* Fault in every page now (like QEMU's -mem-prealloc), so that first writes
 * later (a migration's incoming pages) do not pay for it; through the alias
 * too, where there is one. */
int mem_prealloc(struct guest_mem *m);
/* Unmap everything; tolerates a half-built or zeroed guest_mem. */
void mem_destroy(struct guest_mem *m);

/* Host pointer for [gpa, gpa + len) if that range lies within one region,
 * else NULL. Never trust a guest-supplied gpa without this. */
void *mem_gpa_to_hva(const struct guest_mem *m, uint64_t gpa, uint64_t len);

static inline uint64_t mem_nr_pages(const struct guest_mem *m)
{
	return m->size >> 12;
}

#endif
