// SPDX-License-Identifier: MIT
#include "fake_hv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/bitmap.h"
#include "common/util.h"
#include "guests/abi.h"
#include "vmm/dirty.h"

static struct hv_vm *last_vm;

struct hv_vm *fake_hv_last_vm(void)
{
	return last_vm;
}

static int fake_vm_create(const struct hv_vm_config *cfg, struct hv_vm **out)
{
	struct hv_vm *vm = calloc(1, sizeof(*vm));

	if (!vm)
		return -ENOMEM;
	pthread_mutex_init(&vm->lock, NULL);
	vm->caps.tsc_khz = 1000000;
	vm->caps.manual_protect = true;
	*out = last_vm = vm;
	return 0;
}

static void fake_vm_destroy(struct hv_vm *vm)
{
	if (last_vm == vm)
		last_vm = NULL;
	free(vm->dirty);
	pthread_mutex_destroy(&vm->lock);
	free(vm);
}

static void fake_vm_caps(struct hv_vm *vm, struct hv_caps *caps)
{
	*caps = vm->caps;
}

static int fake_map(struct hv_vm *vm, uint32_t slot, uint64_t gpa, uint64_t size, void *hva,
		    bool log_dirty)
{
	uint64_t end = (gpa + size) >> 12;

	if (slot > 1)
		return -EINVAL;
	if (!log_dirty)
		vm->unlogged_pages = MAX(vm->unlogged_pages, end);
	if (end > vm->nr_pages) {
		free(vm->dirty);
		vm->nr_pages = end;
		vm->dirty = bitmap_alloc(end);
	}
	return vm->dirty ? 0 : -ENOMEM;
}

static int fake_vm_get_state(struct hv_vm *vm, struct x86_vm_state *st)
{
	*st = vm->vmst;
	return 0;
}

static int fake_vm_set_state(struct hv_vm *vm, const struct x86_vm_state *st)
{
	vm->vmst = *st;
	return 0;
}

static int fake_vcpu_create(struct hv_vm *vm, uint32_t index, struct hv_vcpu **out)
{
	struct hv_vcpu *v;

	if (index >= FAKE_MAX_VCPUS)
		return -EINVAL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->vm = vm;
	v->index = index;
	vm->vcpus[index] = v;
	*out = v;
	return 0;
}

static void fake_vcpu_destroy(struct hv_vcpu *v)
{
	v->vm->vcpus[v->index] = NULL;
	free(v);
}

static int fake_vcpu_run(struct hv_vcpu *v, struct hv_exit *ex)
{
	memset(ex, 0, sizeof(*ex));
	if (__atomic_exchange_n(&v->kicked, 0, __ATOMIC_ACQ_REL)) {
		ex->reason = HV_EXIT_INTR;
		return 0;
	}
	__atomic_store_n(&v->in_guest, 1, __ATOMIC_RELEASE);
	uint64_t end = now_ns() + 20000;
	while (now_ns() < end && !__atomic_load_n(&v->kicked, __ATOMIC_ACQUIRE))
		;
	__atomic_store_n(&v->in_guest, 0, __ATOMIC_RELEASE);
	if (__atomic_exchange_n(&v->kicked, 0, __ATOMIC_ACQ_REL)) {
		ex->reason = HV_EXIT_INTR;
		return 0;
	}
	uint64_t runs = __atomic_add_fetch(&v->runs, 1, __ATOMIC_ACQ_REL);
	ex->reason = HV_EXIT_IO;
	ex->io.size = 4;
	ex->io.out = true;
	ex->io.count = 1;
	ex->io.data = (uint8_t *)&v->io_word;
	if (v->vm->exit_after && runs >= v->vm->exit_after) {
		ex->io.port = FLIT_TESTDEV_PORT + FLIT_TD_EXIT;
		v->io_word = v->vm->exit_status;
	} else {
		ex->io.port = FLIT_TESTDEV_PORT + FLIT_TD_PROGRESS;
		v->io_word = (uint32_t)runs;
	}
	return 0;
}

static void fake_vcpu_kick(struct hv_vcpu *v)
{
	__atomic_store_n(&v->kicked, 1, __ATOMIC_RELEASE);
}

static int fake_get_state(struct hv_vcpu *v, struct x86_cpu_state *st, unsigned parts)
{
	if (parts & X86_PART_REGS) {
		memcpy(st->gpr, v->st.gpr, sizeof(st->gpr));
		st->rip = v->st.rip;
		st->rflags = v->st.rflags;
	}
	if (parts & X86_PART_SREGS) {
		st->cs = v->st.cs;
		st->ss = v->st.ss;
		st->cr0 = v->st.cr0;
		st->cr3 = v->st.cr3;
		st->cr4 = v->st.cr4;
		st->efer = v->st.efer;
	}
	if (parts & X86_PART_MSRS) {
		st->nr_msrs = v->st.nr_msrs;
		memcpy(st->msrs, v->st.msrs, sizeof(st->msrs));
	}
	return 0;
}

static int fake_set_state(struct hv_vcpu *v, const struct x86_cpu_state *st, unsigned parts)
{
	if (parts & X86_PART_REGS) {
		memcpy(v->st.gpr, st->gpr, sizeof(st->gpr));
		v->st.rip = st->rip;
		v->st.rflags = st->rflags;
	}
	if (parts & X86_PART_SREGS) {
		v->st.cs = st->cs;
		v->st.ss = st->ss;
		v->st.cr0 = st->cr0;
		v->st.cr3 = st->cr3;
		v->st.cr4 = st->cr4;
		v->st.efer = st->efer;
	}
	if (parts & X86_PART_MSRS) {
		if (st->nr_msrs > X86_MAX_MSRS)
			return -EINVAL;
		v->st.nr_msrs = st->nr_msrs;
		memcpy(v->st.msrs, st->msrs, sizeof(st->msrs));
	}
	return 0;
}

void fake_guest_write(struct hv_vm *vm, uint64_t page)
{
	pthread_mutex_lock(&vm->lock);
	if (vm->logging && page < vm->nr_pages && page >= vm->unlogged_pages)
		bitmap_set(vm->dirty, page);
	pthread_mutex_unlock(&vm->lock);
}

static int fake_dirty_start(struct hv_vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	vm->logging = 1;
	memset(vm->dirty, 0, BITMAP_WORDS(vm->nr_pages) * 8);
	pthread_mutex_unlock(&vm->lock);
	return 0;
}

static int fake_dirty_collect(struct hv_vm *vm, uint64_t *bitmap, uint64_t nr_pages)
{
	pthread_mutex_lock(&vm->lock);
	for (uint64_t w = 0; w < BITMAP_WORDS(MIN(nr_pages, vm->nr_pages)); w++) {
		bitmap[w] |= vm->dirty[w];
		vm->dirty[w] = 0;
	}
	pthread_mutex_unlock(&vm->lock);
	return 0;
}

static int fake_dirty_stop(struct hv_vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	vm->logging = 0;
	pthread_mutex_unlock(&vm->lock);
	return 0;
}

static const struct dirty_ops fake_dirty_ops = {
    .name = "bitmap",
    .start = fake_dirty_start,
    .collect = fake_dirty_collect,
    .stop = fake_dirty_stop,
};

const struct hv_ops fake_hv_ops = {
    .name = "fake",
    .vm_create = fake_vm_create,
    .vm_destroy = fake_vm_destroy,
    .vm_caps = fake_vm_caps,
    .vm_map_memory = fake_map,
    .vm_get_state = fake_vm_get_state,
    .vm_set_state = fake_vm_set_state,
    .vcpu_create = fake_vcpu_create,
    .vcpu_destroy = fake_vcpu_destroy,
    .vcpu_run = fake_vcpu_run,
    .vcpu_kick = fake_vcpu_kick,
    .vcpu_get_state = fake_get_state,
    .vcpu_set_state = fake_set_state,
    .dirty_bitmap = &fake_dirty_ops,
    .dirty_ring = NULL,
};
