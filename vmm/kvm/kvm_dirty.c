// SPDX-License-Identifier: MIT
/*
 * KVM's two dirty trackers.
 *
 * bitmap: KVM_GET_DIRTY_LOG per slot. With KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2
 * the get does not re-protect; we then KVM_CLEAR_DIRTY_LOG only the chunks
 * that hold dirty pages, so a round costs in proportion to what was dirtied
 * (plus one pass over the bitmap), not to the size of RAM.
 *
 * ring: every vCPU pushes the pages it dirties onto its own ring. Harvest
 * reads each ring from its fetch index until an entry without the DIRTY
 * flag, marks entries RESET, then KVM_RESET_DIRTY_RINGS re-protects the
 * pages. No scan of a bitmap at all; the cost is per dirtied page.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "common/bitmap.h"
#include "common/log.h"
#include "common/util.h"
#include "kvm_priv.h"
#include "vmm/dirty.h"

/* Pages re-protected per KVM_CLEAR_DIRTY_LOG: small enough that a sparse
 * round clears little, large enough that a dense one makes few calls. */
#define CLEAR_CHUNK_PAGES 4096

static uint64_t vm_nr_pages(const struct hv_vm *vm)
{
	uint64_t end = 0;

	for (unsigned i = 0; i < KVM_MAX_SLOTS; i++)
		if (vm->slots[i].used)
			end = MAX(end, (vm->slots[i].gpa + vm->slots[i].size) >> 12);
	return end;
}

/* OR nbits of src into dst starting at bit 'at'. */
static void bitmap_or_at(uint64_t *dst, uint64_t dst_bits, const uint64_t *src, uint64_t nbits,
			 uint64_t at)
{
	if (at % 64 == 0) {
		uint64_t w0 = at / 64, words = BITMAP_WORDS(MIN(nbits, dst_bits - at));
		for (uint64_t w = 0; w < words; w++)
			dst[w0 + w] |= src[w];
		return;
	}
	uint64_t bit;
	bitmap_for_each_set(bit, src, nbits)
	{
		if (at + bit < dst_bits)
			bitmap_set(dst, at + bit);
	}
}

static int bitmap_start(struct hv_vm *vm)
{
	return kvm_set_dirty_logging(vm, true);
}

static int bitmap_stop(struct hv_vm *vm)
{
	return kvm_set_dirty_logging(vm, false);
}

static int bitmap_clear_chunks(struct hv_vm *vm, struct kvm_slot *s, uint64_t *log)
{
	uint64_t pages = s->size >> 12;

	for (uint64_t first = 0; first < pages; first += CLEAR_CHUNK_PAGES) {
		uint64_t n = MIN((uint64_t)CLEAR_CHUNK_PAGES, pages - first);
		uint64_t *chunk = log + first / 64;
		bool any = false;

		for (uint64_t w = 0; w < BITMAP_WORDS(n); w++)
			if (chunk[w]) {
				any = true;
				break;
			}
		if (!any)
			continue;
		struct kvm_clear_dirty_log c = {
		    .slot = s->id,
		    .num_pages = (uint32_t)n,
		    .first_page = first,
		    .dirty_bitmap = chunk,
		};
		if (ioctl(vm->vm_fd, KVM_CLEAR_DIRTY_LOG, &c) < 0) {
			int err = -errno;
			log_err("KVM_CLEAR_DIRTY_LOG slot %u: %s", s->id, strerror(errno));
			return err;
		}
	}
	return 0;
}

static int bitmap_collect(struct hv_vm *vm, uint64_t *bitmap, uint64_t nr_pages)
{
	for (unsigned i = 0; i < KVM_MAX_SLOTS; i++) {
		struct kvm_slot *s = &vm->slots[i];
		uint64_t pages = s->size >> 12;

		if (!s->used || !s->logging)
			continue;
		/* One buffer per slot, reused every round (the owner thread is the
		 * only caller). */
		if (!s->log_buf) {
			s->log_buf = bitmap_alloc(pages);
			if (!s->log_buf)
				return -ENOMEM;
		}
		uint64_t *log = s->log_buf;
		memset(log, 0, BITMAP_WORDS(pages) * sizeof(uint64_t));
		struct kvm_dirty_log d = {.slot = s->id, .dirty_bitmap = log};
		if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &d) < 0) {
			int err = -errno;
			log_err("KVM_GET_DIRTY_LOG slot %u: %s", s->id, strerror(errno));
			return err;
		}
		if (vm->manual_protect) {
			int r = bitmap_clear_chunks(vm, s, log);
			if (r)
				return r;
		}
		if ((s->gpa >> 12) < nr_pages)
			bitmap_or_at(bitmap, nr_pages, log, pages, s->gpa >> 12);
	}
	return 0;
}

const struct dirty_ops kvm_dirty_bitmap_ops = {
    .name = "bitmap",
    .start = bitmap_start,
    .collect = bitmap_collect,
    .stop = bitmap_stop,
};

static const struct kvm_slot *slot_by_id(const struct hv_vm *vm, uint32_t id)
{
	for (unsigned i = 0; i < KVM_MAX_SLOTS; i++)
		if (vm->slots[i].used && vm->slots[i].id == id)
			return &vm->slots[i];
	return NULL;
}

static void ring_pending_reset(struct hv_vm *vm)
{
	vm->ring_pending_lo = UINT64_MAX;
	vm->ring_pending_hi = 0;
}

uint64_t kvm_ring_harvest_locked(struct hv_vcpu *v, uint64_t *bitmap, uint64_t nbits)
{
	struct hv_vm *vm = v->vm;
	bool pending = !bitmap;
	uint64_t n = 0;

	if (pending) {
		bitmap = vm->ring_pending;
		nbits = vm->ring_pending_pages;
	}
	if (!v->ring)
		return 0;
	for (;;) {
		struct kvm_dirty_gfn *e = &v->ring[v->ring_fetch % vm->ring_entries];
		uint32_t flags = __atomic_load_n(&e->flags, __ATOMIC_ACQUIRE);

		if (!(flags & KVM_DIRTY_GFN_F_DIRTY))
			break;
		const struct kvm_slot *s = slot_by_id(vm, e->slot & 0xffff);
		if (s && e->offset < (s->size >> 12)) {
			uint64_t gfn = (s->gpa >> 12) + e->offset;
			if (gfn < nbits) {
				bitmap_set(bitmap, gfn);
				if (pending) {
					vm->ring_pending_lo = MIN(vm->ring_pending_lo, gfn / 64);
					vm->ring_pending_hi = MAX(vm->ring_pending_hi, gfn / 64);
				}
			}
		} else {
			log_warn("dirty ring entry for unknown slot %u offset %llu", e->slot,
				 (unsigned long long)e->offset);
		}
		__atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
		v->ring_fetch++;
		n++;
	}
	return n;
}

static int ring_reset(struct hv_vm *vm)
{
	if (ioctl(vm->vm_fd, KVM_RESET_DIRTY_RINGS, 0) < 0) {
		int err = -errno;
		log_err("KVM_RESET_DIRTY_RINGS: %s", strerror(errno));
		return err;
	}
	return 0;
}

static int ring_start(struct hv_vm *vm)
{
	uint64_t pages = vm_nr_pages(vm);

	if (!vm->ring_entries)
		return -ENOTSUP;
	pthread_mutex_lock(&vm->ring_lock);
	free(vm->ring_pending);
	vm->ring_pending = bitmap_alloc(pages);
	vm->ring_pending_pages = vm->ring_pending ? pages : 0;
	ring_pending_reset(vm);
	pthread_mutex_unlock(&vm->ring_lock);
	if (!vm->ring_pending)
		return -ENOMEM;
	return kvm_set_dirty_logging(vm, true);
}

static int ring_collect(struct hv_vm *vm, uint64_t *bitmap, uint64_t nr_pages)
{
	int r;

	/* Straight into the caller's bitmap: the cost is per dirtied page,
	 * whatever the size of RAM. Only what full rings left behind is merged,
	 * over the words it touched. */
	pthread_mutex_lock(&vm->ring_lock);
	for (unsigned i = 0; i < KVM_MAX_VCPUS_HERE; i++)
		if (vm->vcpus[i])
			kvm_ring_harvest_locked(vm->vcpus[i], bitmap, nr_pages);
	r = ring_reset(vm);
	uint64_t words = BITMAP_WORDS(MIN(nr_pages, vm->ring_pending_pages));
	for (uint64_t w = vm->ring_pending_lo; w <= vm->ring_pending_hi && w < words; w++) {
		bitmap[w] |= vm->ring_pending[w];
		vm->ring_pending[w] = 0;
	}
	ring_pending_reset(vm);
	pthread_mutex_unlock(&vm->ring_lock);
	return r;
}

static int ring_stop(struct hv_vm *vm)
{
	int r = kvm_set_dirty_logging(vm, false);

	pthread_mutex_lock(&vm->ring_lock);
	for (unsigned i = 0; i < KVM_MAX_VCPUS_HERE; i++)
		if (vm->vcpus[i])
			kvm_ring_harvest_locked(vm->vcpus[i], NULL, 0);
	if (!r)
		r = ring_reset(vm);
	pthread_mutex_unlock(&vm->ring_lock);
	return r;
}

static int ring_full(struct hv_vcpu *v)
{
	int r;

	pthread_mutex_lock(&v->vm->ring_lock);
	kvm_ring_harvest_locked(v, NULL, 0);
	r = ring_reset(v->vm);
	pthread_mutex_unlock(&v->vm->ring_lock);
	return r;
}

const struct dirty_ops kvm_dirty_ring_ops = {
    .name = "ring",
    .start = ring_start,
    .collect = ring_collect,
    .stop = ring_stop,
    .ring_full = ring_full,
};
