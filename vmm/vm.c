// SPDX-License-Identifier: MIT
#include "vm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "arch/x86/boot.h"
#include "common/bitmap.h"
#include "common/log.h"
#include "common/util.h"
#include "dirty.h"
#include "guests/pattern.h"
#include "hv.h"
#include "loader.h"

#define IMAGE_MAX_SIZE (64 * MiB)

void vm_notify(struct vm *vm)
{
	uint64_t one = 1;

	pthread_mutex_lock(&vm->lock);
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	if (vm->event_fd >= 0 && write(vm->event_fd, &one, sizeof(one)) < 0)
		log_debug("vm event: %s", strerror(errno));
}

static void vm_add_dev(struct vm *vm, const struct dev_ops *ops, void *dev)
{
	vm->devs[vm->nr_devs++] = (struct vm_dev){.ops = ops, .dev = dev};
}

int vm_create(const struct vm_config *cfg, struct vm **out)
{
	struct hv_vm_config hc = {.nr_vcpus = cfg->nr_vcpus};
	struct vm *vm;
	pthread_condattr_t ca;
	int r;

	if (!cfg->nr_vcpus || cfg->nr_vcpus > FLIT_MAX_VCPUS)
		return -EINVAL;
	if (cfg->mem_size < 4 * MiB || cfg->mem_size % (2 * MiB) ||
	    cfg->mem_size > FLIT_MAX_MEM_GIB * GiB)
		return -EINVAL;
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	vm->cfg = *cfg;
	vm->hv = cfg->hv ? cfg->hv : &kvm_hv_ops;
	vm->event_fd = -1;
	pthread_mutex_init(&vm->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vm->cond, &ca);
	pthread_condattr_destroy(&ca);
	serial_init(&vm->serial);
	testdev_init(&vm->testdev);
	vm_add_dev(vm, &serial_ops, &vm->serial);
	vm_add_dev(vm, &testdev_ops, &vm->testdev);

	vm->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->event_fd < 0) {
		r = -errno;
		goto fail;
	}
	vm->dirty = dirty_ops_by_name(vm->hv->dirty_bitmap, vm->hv->dirty_ring, cfg->dirty_track);
	if (!vm->dirty) {
		log_err("dirty tracking '%s' is not available (bitmap or ring)",
			cfg->dirty_track ? cfg->dirty_track : "?");
		r = -EINVAL;
		goto fail;
	}
	if (vm->dirty == vm->hv->dirty_ring && vm->dirty) {
		hc.dirty_ring_entries =
		    cfg->dirty_ring_entries ? cfg->dirty_ring_entries : VM_DIRTY_RING_ENTRIES;
		hc.dirty_ring_fit = !cfg->dirty_ring_entries;
	}
	r = vm->hv->vm_create(&hc, &vm->hv_vm);
	if (r)
		goto fail;
	r = mem_create(&vm->mem, cfg->mem_size, cfg->backing);
	if (!r && cfg->prealloc)
		r = mem_prealloc(&vm->mem);
	if (r)
		goto fail;
	vm->vmm_dirty = bitmap_alloc(mem_nr_pages(&vm->mem));
	if (!vm->vmm_dirty) {
		r = -ENOMEM;
		goto fail;
	}
	/* Two slots over the one host mapping: the VMM's boot structures below
	 * VM_UNTRACKED_BYTES (GDT, TSS, IDT, page tables, boot info) are never
	 * dirty-logged, so the CPU's own accesses there never write-protect
	 * them (nested hypervisors have been seen to choke on that); the rest is.
	 * A migration sends that first MiB again in its final round. */
	struct mem_region *mr = &vm->mem.regions[0];
	r = vm->hv->vm_map_memory(vm->hv_vm, 0, 0, VM_UNTRACKED_BYTES, mr->hva, false);
	if (!r)
		r = vm->hv->vm_map_memory(vm->hv_vm, 1, VM_UNTRACKED_BYTES,
					  mr->size - VM_UNTRACKED_BYTES,
					  mr->hva + VM_UNTRACKED_BYTES, true);
	if (r)
		goto fail;
	for (uint32_t i = 0; i < cfg->nr_vcpus; i++) {
		r = vcpu_create(vm, i, &vm->vcpus[i]);
		if (r)
			goto fail;
		vm->nr_vcpus++;
	}
	*out = vm;
	return 0;
fail:
	vm_destroy(vm);
	return r;
}

void vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	for (uint32_t i = 0; i < FLIT_MAX_VCPUS; i++)
		vcpu_destroy(vm->vcpus[i]);
	if (vm->dirty_active)
		vm->dirty->stop(vm->hv_vm);
	if (vm->hv_vm)
		vm->hv->vm_destroy(vm->hv_vm);
	mem_destroy(&vm->mem);
	free(vm->vmm_dirty);
	serial_destroy(&vm->serial);
	testdev_destroy(&vm->testdev);
	if (vm->event_fd >= 0)
		close(vm->event_fd);
	pthread_cond_destroy(&vm->cond);
	pthread_mutex_destroy(&vm->lock);
	free(vm);
}

int vm_load_guest(struct vm *vm, const char *path, const char *args)
{
	struct flit_bootinfo *bi;
	struct image_info info;
	struct hv_caps caps;
	char err[200];
	void *img;
	size_t size;
	int r;

	r = image_read_file(path, IMAGE_MAX_SIZE, &img, &size);
	if (r) {
		log_err("guest image %s: %s", path,
			r == -EFBIG    ? "larger than 64 MiB"
			: r == -EISDIR ? "is a directory"
				       : strerror(-r));
		return r;
	}
	r = image_load_elf(img, size, &vm->mem, FLIT_IMAGE_GPA, vm->mem.size, &info, err,
			   sizeof(err));
	free(img);
	if (r) {
		log_err("guest image %s: %s", path, err);
		return r;
	}
	if (args && strlen(args) >= FLIT_ARGS_MAX) {
		log_err("guest arguments longer than %d bytes", FLIT_ARGS_MAX - 1);
		return -E2BIG;
	}
	vm->entry = info.entry;
	vm->data_start = ALIGN_UP(info.hi, FLIT_PAGE_SIZE);
	if (vm->data_start + 64 * KiB > vm->mem.size) {
		log_err("guest image %s leaves no free RAM in %llu MiB", path,
			(unsigned long long)(vm->mem.size >> 20));
		return -ENOMEM;
	}
	r = x86_boot_build_tables(&vm->mem);
	if (r)
		return r;
	bool idt = x86_boot_build_idt(&vm->mem);
	bi = mem_gpa_to_hva(&vm->mem, FLIT_BOOTINFO_GPA, sizeof(*bi));
	memset(bi, 0, sizeof(*bi));
	vm->hv->vm_caps(vm->hv_vm, &caps);
	bi->magic = FLIT_BOOTINFO_MAGIC;
	bi->version = FLIT_BOOTINFO_VERSION;
	bi->nr_vcpus = vm->nr_vcpus;
	bi->mem_size = vm->mem.size;
	bi->data_start = vm->data_start;
	bi->data_end = vm->mem.size;
	bi->tsc_khz = caps.tsc_khz;
	if (args)
		strcpy(bi->args, args);

	struct x86_cpu_state *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	for (uint32_t i = 0; i < vm->nr_vcpus && !r; i++) {
		r = vcpu_get_state(vm->vcpus[i], st, X86_PART_REGS | X86_PART_SREGS);
		if (r)
			break;
		x86_boot_vcpu_state(st, info.entry, i, idt);
		r = vcpu_set_state(vm->vcpus[i], st, X86_PART_REGS | X86_PART_SREGS);
	}
	free(st);
	if (r)
		log_err("setting up the vCPUs for long mode: %s", strerror(-r));
	return r;
}

static int vm_for_each_vcpu(struct vm *vm, int (*fn)(struct vcpu *))
{
	int first = 0;

	for (uint32_t i = 0; i < vm->nr_vcpus; i++) {
		int r = fn(vm->vcpus[i]);
		if (r && !first)
			first = r;
	}
	return first;
}

int vm_start(struct vm *vm)
{
	return vm_for_each_vcpu(vm, vcpu_resume);
}

int vm_pause(struct vm *vm)
{
	return vcpus_call_all(vm->vcpus, vm->nr_vcpus, VCPU_REQ_PAUSE, false, NULL, 0);
}

int vm_resume(struct vm *vm)
{
	return vcpus_call_all(vm->vcpus, vm->nr_vcpus, VCPU_REQ_RESUME, true, NULL, 0);
}

/* Fills *res if the VM is finished; returns true then. Takes vCPU locks. */
static bool vm_check_done(struct vm *vm, struct vm_result *res)
{
	bool all_exited = true;

	memset(res, 0, sizeof(*res));
	for (uint32_t i = 0; i < vm->nr_vcpus; i++) {
		struct vcpu *v = vm->vcpus[i];
		pthread_mutex_lock(&v->lock);
		if (v->state == VCPU_FAILED && !res->failed) {
			res->failed = true;
			snprintf(res->reason, sizeof(res->reason), "vcpu %u: %s", i,
				 v->fail_reason);
		}
		if (v->state == VCPU_EXITED && v->exit_status && !res->exit_status)
			res->exit_status = v->exit_status;
		if (v->state != VCPU_EXITED)
			all_exited = false;
		pthread_mutex_unlock(&v->lock);
	}
	return res->failed || all_exited;
}

void vm_wait(struct vm *vm, int timeout_ms, struct vm_result *res)
{
	struct timespec dl;

	clock_gettime(CLOCK_MONOTONIC, &dl);
	if (timeout_ms >= 0) {
		dl.tv_sec += timeout_ms / 1000;
		dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
		if (dl.tv_nsec >= 1000000000L) {
			dl.tv_sec++;
			dl.tv_nsec -= 1000000000L;
		}
	}
	pthread_mutex_lock(&vm->lock);
	while (!vm_check_done(vm, res)) {
		int r = timeout_ms >= 0 ? pthread_cond_timedwait(&vm->cond, &vm->lock, &dl)
					: pthread_cond_wait(&vm->cond, &vm->lock);
		if (r == ETIMEDOUT && !vm_check_done(vm, res)) {
			res->timed_out = true;
			snprintf(res->reason, sizeof(res->reason),
				 "guest still running after %d ms", timeout_ms);
			break;
		}
	}
	pthread_mutex_unlock(&vm->lock);
	serial_flush(&vm->serial);
}

void vm_pio(struct vm *vm, struct vcpu *vcpu, uint16_t port, bool out, uint8_t size, uint8_t *data)
{
	for (unsigned i = 0; i < vm->nr_devs; i++) {
		const struct dev_ops *d = vm->devs[i].ops;
		if (port >= d->port && port - d->port < d->nr_ports) {
			d->pio(vm->devs[i].dev, vcpu, (uint16_t)(port - d->port), out, size, data);
			return;
		}
	}
	if (!out)
		memset(data, 0xff, size);
}

void vm_mark_dirty(struct vm *vm, uint64_t gpa, uint64_t len)
{
	if (!len || !__atomic_load_n(&vm->dirty_active, __ATOMIC_ACQUIRE))
		return;
	for (uint64_t p = gpa >> 12; p <= (gpa + len - 1) >> 12 && p < mem_nr_pages(&vm->mem);
	     p++) {
		if (!bitmap_test_and_set_atomic(vm->vmm_dirty, p))
			__atomic_fetch_add(&vm->vmm_dirty_new, 1, __ATOMIC_RELEASE);
	}
}

int vm_write(struct vm *vm, uint64_t gpa, const void *buf, uint64_t len)
{
	void *p = mem_gpa_to_hva(&vm->mem, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(p, buf, len);
	vm_mark_dirty(vm, gpa, len);
	return 0;
}

int vm_read(struct vm *vm, uint64_t gpa, void *buf, uint64_t len)
{
	void *p = mem_gpa_to_hva(&vm->mem, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(buf, p, len);
	return 0;
}

int vm_dirty_start(struct vm *vm)
{
	int r;

	if (vm->dirty_active)
		return -EALREADY;
	memset(vm->vmm_dirty, 0, BITMAP_WORDS(mem_nr_pages(&vm->mem)) * sizeof(uint64_t));
	vm->vmm_dirty_new = 0;
	r = vm->dirty->start(vm->hv_vm);
	if (!r)
		__atomic_store_n(&vm->dirty_active, true, __ATOMIC_RELEASE);
	return r;
}

int vm_dirty_collect(struct vm *vm, uint64_t *bitmap)
{
	uint64_t words = BITMAP_WORDS(mem_nr_pages(&vm->mem));
	int r;

	if (!vm->dirty_active)
		return -EINVAL;
	r = vm->dirty->collect(vm->hv_vm, bitmap, mem_nr_pages(&vm->mem));
	if (r)
		return r;
	/* Scan the VMM's own bits only if some were set: a bit set during the
	 * scan also bumped the count, so the next collect scans again. */
	if (!__atomic_exchange_n(&vm->vmm_dirty_new, 0, __ATOMIC_ACQ_REL))
		return 0;
	for (uint64_t w = 0; w < words; w++)
		if (__atomic_load_n(&vm->vmm_dirty[w], __ATOMIC_RELAXED))
			bitmap[w] |= __atomic_exchange_n(&vm->vmm_dirty[w], 0, __ATOMIC_ACQ_REL);
	return 0;
}

int vm_dirty_stop(struct vm *vm)
{
	if (!vm->dirty_active)
		return 0;
	__atomic_store_n(&vm->dirty_active, false, __ATOMIC_RELEASE);
	return vm->dirty->stop(vm->hv_vm);
}

/* Every vCPU saves (restores) its own state on its own thread, all at
 * once: a migration's downtime pays for the slowest, not the sum. */
int vm_save_cpus(struct vm *vm, struct x86_cpu_state *states, struct x86_vm_state *vmst)
{
	int r = vcpus_call_all(vm->vcpus, vm->nr_vcpus, VCPU_REQ_GET_STATE, false, states,
			       X86_PART_ALL);

	return r ? r : vm->hv->vm_get_state(vm->hv_vm, vmst);
}

int vm_restore_cpus(struct vm *vm, const struct x86_cpu_state *states,
		    const struct x86_vm_state *vmst)
{
	int r = vm->hv->vm_set_state(vm->hv_vm, vmst);

	return r ? r
		 : vcpus_call_all(vm->vcpus, vm->nr_vcpus, VCPU_REQ_SET_STATE, false,
				  (struct x86_cpu_state *)states, X86_PART_ALL);
}

size_t vm_devices_state_size(const struct vm *vm)
{
	size_t n = 0;

	for (unsigned i = 0; i < vm->nr_devs; i++)
		n += vm->devs[i].ops->state_size;
	return n;
}

void vm_save_devices(struct vm *vm, void *buf)
{
	uint8_t *p = buf;

	for (unsigned i = 0; i < vm->nr_devs; i++) {
		vm->devs[i].ops->save(vm->devs[i].dev, p);
		p += vm->devs[i].ops->state_size;
	}
}

int vm_restore_devices(struct vm *vm, const void *buf)
{
	const uint8_t *p = buf;

	for (unsigned i = 0; i < vm->nr_devs; i++) {
		int r = vm->devs[i].ops->restore(vm->devs[i].dev, p);
		if (r) {
			log_err("restoring device %s: invalid state", vm->devs[i].ops->name);
			return r;
		}
		p += vm->devs[i].ops->state_size;
	}
	return 0;
}

int vm_verify_memcheck(struct vm *vm, uint64_t *checked, uint64_t *bad)
{
	const struct flit_bootinfo *bi = mem_gpa_to_hva(&vm->mem, FLIT_BOOTINFO_GPA, sizeof(*bi));
	struct flit_check_desc d;
	const uint32_t *table;

	memcpy(&d, &bi->check, sizeof(d));
	if (d.magic != FLIT_CHECK_MAGIC)
		return -ENODATA;
	/* Guest-written: check before use. */
	if (!d.nr_pages || d.nr_pages > mem_nr_pages(&vm->mem) ||
	    d.first_page > mem_nr_pages(&vm->mem) - d.nr_pages)
		return -EPROTO;
	table = mem_gpa_to_hva(&vm->mem, d.table_gpa, d.nr_pages * sizeof(uint32_t));
	if (!table)
		return -EPROTO;
	*checked = d.nr_pages;
	*bad = 0;
	for (uint64_t i = 0; i < d.nr_pages; i++) {
		const uint64_t *p = mem_gpa_to_hva(&vm->mem, (d.first_page + i) << 12, 4096);
		uint32_t gen = table[i];
		if (flit_pattern_check(p, d.first_page + i, gen))
			continue;
		bool busy = false;
		for (uint32_t v = 0; v < vm->nr_vcpus && v < FLIT_MAX_VCPUS; v++)
			busy |= d.busy_page[v] == i;
		if (busy && flit_pattern_check_torn(p, d.first_page + i, gen))
			continue;
		if (*bad < 4)
			log_warn("host check: page %llu (gpa 0x%llx) does not hold generation %u",
				 (unsigned long long)i,
				 (unsigned long long)((d.first_page + i) << 12), gen);
		(*bad)++;
	}
	return 0;
}

void vm_memcheck_reset_stall(struct vm *vm)
{
	struct flit_bootinfo *bi = mem_gpa_to_hva(&vm->mem, FLIT_BOOTINFO_GPA, sizeof(*bi));

	if (bi->check.magic != FLIT_CHECK_MAGIC)
		return;
	for (uint32_t v = 0; v < vm->nr_vcpus && v < FLIT_MAX_VCPUS; v++)
		__atomic_store_n(&bi->check.max_stall_us[v], 0, __ATOMIC_RELAXED);
}

uint64_t vm_memcheck_max_stall_us(struct vm *vm)
{
	const struct flit_bootinfo *bi = mem_gpa_to_hva(&vm->mem, FLIT_BOOTINFO_GPA, sizeof(*bi));
	uint64_t m = 0;

	if (bi->check.magic != FLIT_CHECK_MAGIC)
		return 0;
	for (uint32_t v = 0; v < vm->nr_vcpus && v < FLIT_MAX_VCPUS; v++)
		m = MAX(m, bi->check.max_stall_us[v]);
	return m;
}
