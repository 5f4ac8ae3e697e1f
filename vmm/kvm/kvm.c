// SPDX-License-Identifier: MIT
/*
 * The KVM backend of struct hv_ops: VM and vCPU file descriptors, memory
 * slots, the run loop's exit decoding and x86 state save/restore.
 */
#include "kvm_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/bitmap.h"
#include "common/log.h"
#include "common/util.h"

#define KVM_DEVICE_DEFAULT   "/dev/kvm"
#define DIRTY_RING_BYTES_MIN 4096

static int xioctl(int fd, unsigned long req, void *arg)
{
	int r;

	do {
		r = ioctl(fd, req, arg);
	} while (r < 0 && errno == EINTR && req != KVM_RUN);
	return r < 0 ? -errno : r;
}

static int kvm_check(struct hv_vm *vm, long cap)
{
	int r = ioctl(vm->vm_fd >= 0 ? vm->vm_fd : vm->sys_fd, KVM_CHECK_EXTENSION, cap);
	return r < 0 ? 0 : r;
}

static int kvm_enable_cap(struct hv_vm *vm, uint32_t cap, uint64_t arg0)
{
	struct kvm_enable_cap ec = {.cap = cap, .args = {arg0}};
	return xioctl(vm->vm_fd, KVM_ENABLE_CAP, &ec);
}

static void kvm_vm_destroy(struct hv_vm *vm)
{
	if (!vm)
		return;
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->sys_fd >= 0)
		close(vm->sys_fd);
	free(vm->cpuid);
	free(vm->ring_pending);
	for (unsigned i = 0; i < KVM_MAX_SLOTS; i++)
		free(vm->slots[i].log_buf);
	pthread_mutex_destroy(&vm->ring_lock);
	free(vm);
}

static int kvm_open_device(void)
{
	const char *path = getenv("FLIT_KVM_DEVICE");
	int fd, err;

	if (!path || !*path)
		path = KVM_DEVICE_DEFAULT;
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		log_err("cannot open %s: %s; KVM is not usable on this host (run the tests "
			"through tools/flit-lab, which falls back to the nested-KVM lab)",
			path, strerror(errno));
		return err;
	}
	return fd;
}

static int kvm_setup_cpuid(struct hv_vm *vm)
{
	unsigned n = 128;

	for (;;) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c)
			return -ENOMEM;
		c->nent = n;
		int r = xioctl(vm->sys_fd, KVM_GET_SUPPORTED_CPUID, c);
		if (r == -E2BIG && n < 4096) {
			free(c);
			n *= 2;
			continue;
		}
		if (r < 0) {
			free(c);
			log_err("KVM_GET_SUPPORTED_CPUID: %s", strerror(-r));
			return r;
		}
		vm->cpuid = c;
		return 0;
	}
}

static int kvm_vm_create(const struct hv_vm_config *cfg, struct hv_vm **out)
{
	struct hv_vm *vm = calloc(1, sizeof(*vm));
	int r;

	if (!vm)
		return -ENOMEM;
	vm->vm_fd = -1;
	pthread_mutex_init(&vm->ring_lock, NULL);
	vm->sys_fd = kvm_open_device();
	if (vm->sys_fd < 0) {
		r = vm->sys_fd;
		vm->sys_fd = -1;
		goto fail;
	}
	r = ioctl(vm->sys_fd, KVM_GET_API_VERSION, 0);
	if (r != KVM_API_VERSION) {
		log_err("KVM API version %d, need %d", r, KVM_API_VERSION);
		r = -ENODEV;
		goto fail;
	}
	do {
		vm->vm_fd = ioctl(vm->sys_fd, KVM_CREATE_VM, 0);
	} while (vm->vm_fd < 0 && errno == EINTR);
	if (vm->vm_fd < 0) {
		r = -errno;
		log_err("KVM_CREATE_VM: %s; KVM is not usable on this host (use tools/flit-lab)",
			strerror(errno));
		goto fail;
	}
	vm->run_size = ioctl(vm->sys_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vm->run_size < (int)sizeof(struct kvm_run)) {
		r = -ENODEV;
		log_err("KVM_GET_VCPU_MMAP_SIZE: bad size %d", vm->run_size);
		goto fail;
	}
	r = kvm_setup_cpuid(vm);
	if (r)
		goto fail;

	vm->caps.tsc_khz = 0;
	if (kvm_check(vm, KVM_CAP_GET_TSC_KHZ)) {
		/* Per-vCPU ioctl on old kernels; probed at vcpu create instead. */
	}
	int xs2 = kvm_check(vm, KVM_CAP_XSAVE2);
	vm->xsave_size = xs2 > 4096 ? (uint32_t)xs2 : 4096;
	if (vm->xsave_size > X86_XSAVE_MAX_SIZE) {
		log_err("XSAVE area of %u bytes is larger than supported (%d)", vm->xsave_size,
			X86_XSAVE_MAX_SIZE);
		r = -ENOTSUP;
		goto fail;
	}
	vm->has_xcrs = kvm_check(vm, KVM_CAP_XCRS);
	vm->has_debugregs = kvm_check(vm, KVM_CAP_DEBUGREGS);
	vm->has_vcpu_events = kvm_check(vm, KVM_CAP_VCPU_EVENTS);

	/* Dirty log with explicit clear: GET no longer re-protects everything,
	 * CLEAR re-protects only what was collected, in chunks. */
	if (kvm_check(vm, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) &&
	    !kvm_enable_cap(vm, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
			    KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE))
		vm->manual_protect = true;
	vm->caps.manual_protect = vm->manual_protect;

	int ring_max = kvm_check(vm, KVM_CAP_DIRTY_LOG_RING_ACQ_REL);
	uint32_t ring_cap = KVM_CAP_DIRTY_LOG_RING_ACQ_REL;
	if (!ring_max) {
		ring_max = kvm_check(vm, KVM_CAP_DIRTY_LOG_RING);
		ring_cap = KVM_CAP_DIRTY_LOG_RING;
	}
	vm->caps.dirty_ring = ring_max > 0;
	if (cfg->dirty_ring_entries) {
		uint64_t bytes = (uint64_t)cfg->dirty_ring_entries * sizeof(struct kvm_dirty_gfn);
		/* A default size is a wish: shrink it to what this KVM offers. */
		while (cfg->dirty_ring_fit && ring_max > 0 && bytes > (uint64_t)ring_max &&
		       bytes > DIRTY_RING_BYTES_MIN)
			bytes /= 2;
		if (!ring_max) {
			log_err("this KVM has no dirty ring (KVM_CAP_DIRTY_LOG_RING); use "
				"--dirty-track bitmap");
			r = -ENOTSUP;
			goto fail;
		}
		if (bytes < DIRTY_RING_BYTES_MIN || bytes > (uint64_t)ring_max ||
		    (bytes & (bytes - 1))) {
			log_err("dirty ring of %llu entries not possible (at most %d bytes, a "
				"power of 2)",
				(unsigned long long)(bytes / sizeof(struct kvm_dirty_gfn)),
				ring_max);
			r = -EINVAL;
			goto fail;
		}
		r = kvm_enable_cap(vm, ring_cap, bytes);
		if (r) {
			log_err("enabling the dirty ring: %s", strerror(-r));
			goto fail;
		}
		vm->ring_entries = (uint32_t)(bytes / sizeof(struct kvm_dirty_gfn));
	}
	*out = vm;
	return 0;
fail:
	kvm_vm_destroy(vm);
	return r;
}

static void kvm_vm_caps(struct hv_vm *vm, struct hv_caps *caps)
{
	*caps = vm->caps;
}

static int kvm_slot_apply(struct hv_vm *vm, struct kvm_slot *s)
{
	struct kvm_userspace_memory_region r = {
	    .slot = s->id,
	    .flags = s->logging ? KVM_MEM_LOG_DIRTY_PAGES : 0,
	    .guest_phys_addr = s->gpa,
	    .memory_size = s->size,
	    .userspace_addr = (uint64_t)(uintptr_t)s->hva,
	};
	return xioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r);
}

static int kvm_vm_map_memory(struct hv_vm *vm, uint32_t slot, uint64_t gpa, uint64_t size,
			     void *hva, bool log_dirty)
{
	struct kvm_slot *s;
	int r;

	if (slot >= KVM_MAX_SLOTS || !size || (gpa | size) & 0xfff)
		return -EINVAL;
	s = &vm->slots[slot];
	free(s->log_buf);
	*s = (struct kvm_slot){
	    .used = true, .id = slot, .gpa = gpa, .size = size, .hva = hva, .log_dirty = log_dirty};
	r = kvm_slot_apply(vm, s);
	if (r) {
		log_err("KVM_SET_USER_MEMORY_REGION: %s", strerror(-r));
		s->used = false;
	}
	return r;
}

int kvm_set_dirty_logging(struct hv_vm *vm, bool on)
{
	for (unsigned i = 0; i < KVM_MAX_SLOTS; i++) {
		struct kvm_slot *s = &vm->slots[i];
		if (!s->used || !s->log_dirty || s->logging == on)
			continue;
		s->logging = on;
		int r = kvm_slot_apply(vm, s);
		if (r) {
			s->logging = !on;
			log_err("%s dirty logging on slot %u: %s", on ? "enabling" : "disabling", i,
				strerror(-r));
			return r;
		}
	}
	return 0;
}

static int kvm_vm_get_state(struct hv_vm *vm, struct x86_vm_state *st)
{
	struct kvm_clock_data c = {0};
	int r = xioctl(vm->vm_fd, KVM_GET_CLOCK, &c);

	if (r)
		return r;
	memset(st, 0, sizeof(*st));
	st->clock_ns = c.clock;
	st->clock_flags = c.flags;
	return 0;
}

static int kvm_vm_set_state(struct hv_vm *vm, const struct x86_vm_state *st)
{
	struct kvm_clock_data c = {.clock = st->clock_ns};

	return xioctl(vm->vm_fd, KVM_SET_CLOCK, &c);
}

/* Reads the MSR index list and keeps the MSRs that this host can read:
 * KVM_GET_MSRS stops at the first one it cannot, and says how many it did. */
static int kvm_probe_msrs(struct hv_vm *vm, int vcpu_fd)
{
	struct kvm_msr_list *list;
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[X86_MAX_MSRS];
	} buf;
	uint32_t n = 0;
	int r;

	list = calloc(1, sizeof(*list) + 1024 * sizeof(uint32_t));
	if (!list)
		return -ENOMEM;
	list->nmsrs = 1024;
	r = xioctl(vm->sys_fd, KVM_GET_MSR_INDEX_LIST, list);
	if (r) {
		log_err("KVM_GET_MSR_INDEX_LIST: %s", strerror(-r));
		free(list);
		return r;
	}
	for (uint32_t i = 0; i < list->nmsrs && n < X86_MAX_MSRS; i++) {
		memset(&buf, 0, sizeof(buf));
		buf.hdr.nmsrs = 1;
		buf.e[0].index = list->indices[i];
		if (ioctl(vcpu_fd, KVM_GET_MSRS, &buf) == 1)
			vm->msr_list[n++] = list->indices[i];
		else
			log_debug("MSR 0x%x is listed but not readable; not saved",
				  list->indices[i]);
	}
	if (list->nmsrs > X86_MAX_MSRS)
		log_warn("%u MSRs listed, saving the first readable %d", list->nmsrs, X86_MAX_MSRS);
	free(list);
	vm->nr_msrs = n;
	vm->msrs_probed = true;
	return 0;
}

static void kvm_vcpu_destroy(struct hv_vcpu *v)
{
	if (!v)
		return;
	if (v->ring)
		munmap(v->ring, v->vm->ring_entries * sizeof(struct kvm_dirty_gfn));
	if (v->run)
		munmap(v->run, (size_t)v->vm->run_size);
	if (v->fd >= 0)
		close(v->fd);
	if (v->index < KVM_MAX_VCPUS_HERE && v->vm->vcpus[v->index] == v)
		v->vm->vcpus[v->index] = NULL;
	free(v);
}

static int kvm_vcpu_create(struct hv_vm *vm, uint32_t index, struct hv_vcpu **out)
{
	struct hv_vcpu *v;
	int r;

	if (index >= KVM_MAX_VCPUS_HERE || vm->vcpus[index])
		return -EINVAL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->vm = vm;
	v->index = index;
	v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
	if (v->fd < 0) {
		r = -errno;
		log_err("KVM_CREATE_VCPU %u: %s", index, strerror(errno));
		v->fd = -1;
		goto fail;
	}
	fcntl(v->fd, F_SETFD, FD_CLOEXEC);
	v->run = mmap(NULL, (size_t)vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		r = -errno;
		v->run = NULL;
		log_err("mapping kvm_run: %s", strerror(errno));
		goto fail;
	}
	if (vm->ring_entries) {
		v->ring = mmap(NULL, vm->ring_entries * sizeof(struct kvm_dirty_gfn),
			       PROT_READ | PROT_WRITE, MAP_SHARED, v->fd,
			       (off_t)KVM_DIRTY_LOG_PAGE_OFFSET * getpagesize());
		if (v->ring == MAP_FAILED) {
			r = -errno;
			v->ring = NULL;
			log_err("mapping the dirty ring: %s", strerror(errno));
			goto fail;
		}
	}
	r = xioctl(v->fd, KVM_SET_CPUID2, vm->cpuid);
	if (r) {
		log_err("KVM_SET_CPUID2: %s", strerror(-r));
		goto fail;
	}
	if (!vm->msrs_probed) {
		r = kvm_probe_msrs(vm, v->fd);
		if (r)
			goto fail;
		int khz = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
		vm->caps.tsc_khz = khz > 0 ? (uint32_t)khz : 0;
	}
	vm->vcpus[index] = v;
	*out = v;
	return 0;
fail:
	kvm_vcpu_destroy(v);
	return r;
}

static int kvm_vcpu_run(struct hv_vcpu *v, struct hv_exit *ex)
{
	struct kvm_run *run = v->run;
	int r = ioctl(v->fd, KVM_RUN, 0);
	int err = errno;

	/* A kick that arrives from here on is seen by the mailbox check that
	 * follows; one that arrived before made this KVM_RUN return. */
	__atomic_store_n(&run->immediate_exit, 0, __ATOMIC_RELAXED);
	memset(ex, 0, sizeof(*ex));
	if (r < 0) {
		if (err == EINTR || err == EAGAIN) {
			ex->reason = HV_EXIT_INTR;
			return 0;
		}
		return -err;
	}
	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		ex->reason = HV_EXIT_IO;
		ex->io.port = run->io.port;
		ex->io.size = run->io.size;
		ex->io.out = run->io.direction == KVM_EXIT_IO_OUT;
		ex->io.count = run->io.count;
		if (run->io.data_offset + (uint64_t)run->io.size * run->io.count >
		    (uint64_t)v->vm->run_size)
			return -EIO;
		ex->io.data = (uint8_t *)run + run->io.data_offset;
		break;
	case KVM_EXIT_INTR:
		ex->reason = HV_EXIT_INTR;
		break;
	case KVM_EXIT_SHUTDOWN:
		ex->reason = HV_EXIT_SHUTDOWN;
		break;
	case KVM_EXIT_HLT:
		ex->reason = HV_EXIT_HLT;
		break;
	case KVM_EXIT_MMIO:
		ex->reason = HV_EXIT_MMIO;
		ex->mmio_addr = run->mmio.phys_addr;
		break;
	case KVM_EXIT_DIRTY_RING_FULL:
		ex->reason = HV_EXIT_DIRTY_FULL;
		break;
	case KVM_EXIT_FAIL_ENTRY:
		ex->reason = HV_EXIT_FAIL;
		ex->detail = run->fail_entry.hardware_entry_failure_reason;
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		ex->reason = HV_EXIT_FAIL;
		ex->detail = 0x10000u | run->internal.suberror;
		break;
	default:
		ex->reason = HV_EXIT_FAIL;
		ex->detail = 0x20000u | run->exit_reason;
		break;
	}
	return 0;
}

/* KVM finishes a pending I/O on the next KVM_RUN before it looks at
 * immediate_exit: enter with it set, and no guest instruction runs. */
static int kvm_vcpu_complete(struct hv_vcpu *v)
{
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_RELEASE);
	int r = ioctl(v->fd, KVM_RUN, 0);
	int err = errno;
	__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_RELAXED);
	if (r < 0 && err != EINTR && err != EAGAIN)
		return -err;
	return 0;
}

static void kvm_vcpu_kick(struct hv_vcpu *v)
{
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_RELEASE);
}

static void seg_from_kvm(struct x86_segment *d, const struct kvm_segment *s)
{
	*d = (struct x86_segment){.base = s->base,
				  .limit = s->limit,
				  .selector = s->selector,
				  .type = s->type,
				  .present = s->present,
				  .dpl = s->dpl,
				  .db = s->db,
				  .s = s->s,
				  .l = s->l,
				  .g = s->g,
				  .avl = s->avl,
				  .unusable = s->unusable};
}

static void seg_to_kvm(struct kvm_segment *d, const struct x86_segment *s)
{
	*d = (struct kvm_segment){.base = s->base,
				  .limit = s->limit,
				  .selector = s->selector,
				  .type = s->type,
				  .present = s->present,
				  .dpl = s->dpl,
				  .db = s->db,
				  .s = s->s,
				  .l = s->l,
				  .g = s->g,
				  .avl = s->avl,
				  .unusable = s->unusable};
}

static int get_regs(struct hv_vcpu *v, struct x86_cpu_state *st)
{
	struct kvm_regs r;
	int e = xioctl(v->fd, KVM_GET_REGS, &r);

	if (e)
		return e;
	uint64_t g[X86_NR_GPRS] = {r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp,
				   r.r8,  r.r9,	 r.r10, r.r11, r.r12, r.r13, r.r14, r.r15};
	memcpy(st->gpr, g, sizeof(g));
	st->rip = r.rip;
	st->rflags = r.rflags;
	return 0;
}

static int set_regs(struct hv_vcpu *v, const struct x86_cpu_state *st)
{
	const uint64_t *g = st->gpr;
	struct kvm_regs r = {
	    .rax = g[X86_RAX],
	    .rbx = g[X86_RBX],
	    .rcx = g[X86_RCX],
	    .rdx = g[X86_RDX],
	    .rsi = g[X86_RSI],
	    .rdi = g[X86_RDI],
	    .rsp = g[X86_RSP],
	    .rbp = g[X86_RBP],
	    .r8 = g[X86_R8],
	    .r9 = g[X86_R9],
	    .r10 = g[X86_R10],
	    .r11 = g[X86_R11],
	    .r12 = g[X86_R12],
	    .r13 = g[X86_R13],
	    .r14 = g[X86_R14],
	    .r15 = g[X86_R15],
	    .rip = st->rip,
	    .rflags = st->rflags,
	};
	return xioctl(v->fd, KVM_SET_REGS, &r);
}

static int get_sregs(struct hv_vcpu *v, struct x86_cpu_state *st)
{
	struct kvm_sregs s;
	int e = xioctl(v->fd, KVM_GET_SREGS, &s);

	if (e)
		return e;
	seg_from_kvm(&st->cs, &s.cs);
	seg_from_kvm(&st->ds, &s.ds);
	seg_from_kvm(&st->es, &s.es);
	seg_from_kvm(&st->fs, &s.fs);
	seg_from_kvm(&st->gs, &s.gs);
	seg_from_kvm(&st->ss, &s.ss);
	seg_from_kvm(&st->tr, &s.tr);
	seg_from_kvm(&st->ldt, &s.ldt);
	st->gdt = (struct x86_dtable){.base = s.gdt.base, .limit = s.gdt.limit};
	st->idt = (struct x86_dtable){.base = s.idt.base, .limit = s.idt.limit};
	st->cr0 = s.cr0;
	st->cr2 = s.cr2;
	st->cr3 = s.cr3;
	st->cr4 = s.cr4;
	st->cr8 = s.cr8;
	st->efer = s.efer;
	st->apic_base = s.apic_base;
	memcpy(st->interrupt_bitmap, s.interrupt_bitmap, sizeof(st->interrupt_bitmap));
	return 0;
}

static int set_sregs(struct hv_vcpu *v, const struct x86_cpu_state *st)
{
	struct kvm_sregs s;

	memset(&s, 0, sizeof(s));
	seg_to_kvm(&s.cs, &st->cs);
	seg_to_kvm(&s.ds, &st->ds);
	seg_to_kvm(&s.es, &st->es);
	seg_to_kvm(&s.fs, &st->fs);
	seg_to_kvm(&s.gs, &st->gs);
	seg_to_kvm(&s.ss, &st->ss);
	seg_to_kvm(&s.tr, &st->tr);
	seg_to_kvm(&s.ldt, &st->ldt);
	s.gdt.base = st->gdt.base;
	s.gdt.limit = st->gdt.limit;
	s.idt.base = st->idt.base;
	s.idt.limit = st->idt.limit;
	s.cr0 = st->cr0;
	s.cr2 = st->cr2;
	s.cr3 = st->cr3;
	s.cr4 = st->cr4;
	s.cr8 = st->cr8;
	s.efer = st->efer;
	s.apic_base = st->apic_base;
	memcpy(s.interrupt_bitmap, st->interrupt_bitmap, sizeof(s.interrupt_bitmap));
	return xioctl(v->fd, KVM_SET_SREGS, &s);
}

static int get_fpu(struct hv_vcpu *v, struct x86_cpu_state *st)
{
	struct hv_vm *vm = v->vm;
	struct kvm_xsave *xs = calloc(1, MAX(vm->xsave_size, sizeof(struct kvm_xsave)));
	int e;

	if (!xs)
		return -ENOMEM;
	e = xioctl(v->fd, vm->xsave_size > 4096 ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, xs);
	if (!e) {
		memcpy(st->xsave, xs, vm->xsave_size);
		st->xsave_size = vm->xsave_size;
	}
	free(xs);
	return e;
}

static int set_fpu(struct hv_vcpu *v, const struct x86_cpu_state *st)
{
	struct hv_vm *vm = v->vm;
	struct kvm_xsave *xs;
	int e;

	if (st->xsave_size != vm->xsave_size) {
		log_err("XSAVE area of %u bytes does not fit this host's %u", st->xsave_size,
			vm->xsave_size);
		return -EINVAL;
	}
	xs = calloc(1, MAX(vm->xsave_size, sizeof(struct kvm_xsave)));
	if (!xs)
		return -ENOMEM;
	memcpy(xs, st->xsave, st->xsave_size);
	e = xioctl(v->fd, KVM_SET_XSAVE, xs);
	free(xs);
	return e;
}

static int get_xcrs(struct hv_vcpu *v, struct x86_cpu_state *st)
{
	struct kvm_xcrs x;
	int e;

	st->nr_xcrs = 0;
	if (!v->vm->has_xcrs)
		return 0;
	e = xioctl(v->fd, KVM_GET_XCRS, &x);
	if (e)
		return e;
	for (uint32_t i = 0; i < x.nr_xcrs && i < X86_MAX_XCRS; i++)
		st->xcrs[i] = (struct x86_xcr){.xcr = x.xcrs[i].xcr, .value = x.xcrs[i].value};
	st->nr_xcrs = MIN(x.nr_xcrs, X86_MAX_XCRS);
	return 0;
}

static int set_xcrs(struct hv_vcpu *v, const struct x86_cpu_state *st)
{
	struct kvm_xcrs x;

	if (!v->vm->has_xcrs || !st->nr_xcrs)
		return 0;
	if (st->nr_xcrs > KVM_MAX_XCRS)
		return -EINVAL;
	memset(&x, 0, sizeof(x));
	x.nr_xcrs = st->nr_xcrs;
	for (uint32_t i = 0; i < st->nr_xcrs; i++) {
		x.xcrs[i].xcr = st->xcrs[i].xcr;
		x.xcrs[i].value = st->xcrs[i].value;
	}
	return xioctl(v->fd, KVM_SET_XCRS, &x);
}

struct msr_buf {
	struct kvm_msrs hdr;
	struct kvm_msr_entry e[X86_MAX_MSRS];
};

static int get_msrs(struct hv_vcpu *v, struct x86_cpu_state *st)
{
	struct hv_vm *vm = v->vm;
	struct msr_buf *b = calloc(1, sizeof(*b));
	int r;

	if (!b)
		return -ENOMEM;
	b->hdr.nmsrs = vm->nr_msrs;
	for (uint32_t i = 0; i < vm->nr_msrs; i++)
		b->e[i].index = vm->msr_list[i];
	r = xioctl(v->fd, KVM_GET_MSRS, b);
	if (r >= 0 && (uint32_t)r != vm->nr_msrs) {
		log_err("KVM_GET_MSRS read %d of %u MSRs (stopped at 0x%x)", r, vm->nr_msrs,
			vm->msr_list[r]);
		r = -EIO;
	}
	if (r >= 0) {
		for (uint32_t i = 0; i < vm->nr_msrs; i++)
			st->msrs[i] =
			    (struct x86_msr){.index = b->e[i].index, .data = b->e[i].data};
		st->nr_msrs = vm->nr_msrs;
		r = 0;
	}
	free(b);
	return r;
}

/*
 * KVM_SET_MSRS returns how many entries it set and stops at the first it
 * refuses. Skip a refused entry only if its value is 0 (a feature MSR left at
 * its reset value, such as KVM's async-PF MSR on some hosts); any other
 * refusal would lose guest state, so it fails the restore.
 */
static int set_msrs(struct hv_vcpu *v, const struct x86_cpu_state *st)
{
	struct msr_buf *b;
	uint32_t done = 0;
	int r = 0;

	if (st->nr_msrs > X86_MAX_MSRS)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	while (done < st->nr_msrs) {
		uint32_t n = st->nr_msrs - done;
		b->hdr.nmsrs = n;
		for (uint32_t i = 0; i < n; i++)
			b->e[i] = (struct kvm_msr_entry){.index = st->msrs[done + i].index,
							 .data = st->msrs[done + i].data};
		r = xioctl(v->fd, KVM_SET_MSRS, b);
		if (r < 0)
			break;
		done += (uint32_t)r;
		if (done < st->nr_msrs) {
			const struct x86_msr *m = &st->msrs[done];
			if (m->data != 0) {
				log_err("MSR 0x%x = 0x%llx refused by KVM_SET_MSRS", m->index,
					(unsigned long long)m->data);
				r = -EIO;
				break;
			}
			log_debug("MSR 0x%x = 0 refused by KVM_SET_MSRS; left at reset", m->index);
			done++;
		}
		r = 0;
	}
	free(b);
	return r;
}

static int get_events(struct hv_vcpu *v, struct x86_cpu_state *st)
{
	struct kvm_vcpu_events e;
	int r;

	memset(&st->events, 0, sizeof(st->events));
	if (!v->vm->has_vcpu_events)
		return 0;
	r = xioctl(v->fd, KVM_GET_VCPU_EVENTS, &e);
	if (r)
		return r;
	st->events = (struct x86_events){
	    .exception_injected = e.exception.injected,
	    .exception_nr = e.exception.nr,
	    .exception_has_error_code = e.exception.has_error_code,
	    .exception_pending = e.exception.pending,
	    .exception_error_code = e.exception.error_code,
	    .interrupt_injected = e.interrupt.injected,
	    .interrupt_nr = e.interrupt.nr,
	    .interrupt_soft = e.interrupt.soft,
	    .interrupt_shadow = e.interrupt.shadow,
	    .nmi_injected = e.nmi.injected,
	    .nmi_pending = e.nmi.pending,
	    .nmi_masked = e.nmi.masked,
	    .smi_smm = e.smi.smm,
	    .smi_pending = e.smi.pending,
	    .smi_inside_nmi = e.smi.smm_inside_nmi,
	    .smi_latched_init = e.smi.latched_init,
	    .exception_has_payload = e.exception_has_payload,
	    .sipi_vector = e.sipi_vector,
	    .flags = e.flags,
	    .exception_payload = e.exception_payload,
	};
	return 0;
}

static int set_events(struct hv_vcpu *v, const struct x86_cpu_state *st)
{
	const struct x86_events *s = &st->events;
	struct kvm_vcpu_events e;

	if (!v->vm->has_vcpu_events)
		return 0;
	memset(&e, 0, sizeof(e));
	e.exception.injected = s->exception_injected;
	e.exception.nr = s->exception_nr;
	e.exception.has_error_code = s->exception_has_error_code;
	e.exception.pending = s->exception_pending;
	e.exception.error_code = s->exception_error_code;
	e.interrupt.injected = s->interrupt_injected;
	e.interrupt.nr = s->interrupt_nr;
	e.interrupt.soft = s->interrupt_soft;
	e.interrupt.shadow = s->interrupt_shadow;
	e.nmi.injected = s->nmi_injected;
	e.nmi.pending = s->nmi_pending;
	e.nmi.masked = s->nmi_masked;
	e.smi.smm = s->smi_smm;
	e.smi.pending = s->smi_pending;
	e.smi.smm_inside_nmi = s->smi_inside_nmi;
	e.smi.latched_init = s->smi_latched_init;
	e.exception_has_payload = s->exception_has_payload;
	e.exception_payload = s->exception_payload;
	e.sipi_vector = s->sipi_vector;
	/* Restore what was valid when saved; never the payload flag on a host
	 * where it was not enabled. */
	e.flags = s->flags & (KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR |
			      KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM);
	return xioctl(v->fd, KVM_SET_VCPU_EVENTS, &e);
}

static int get_debug(struct hv_vcpu *v, struct x86_cpu_state *st)
{
	struct kvm_debugregs d;
	int r;

	memset(&st->debugregs, 0, sizeof(st->debugregs));
	if (!v->vm->has_debugregs)
		return 0;
	r = xioctl(v->fd, KVM_GET_DEBUGREGS, &d);
	if (r)
		return r;
	memcpy(st->debugregs.db, d.db, sizeof(d.db));
	st->debugregs.dr6 = d.dr6;
	st->debugregs.dr7 = d.dr7;
	st->debugregs.flags = d.flags;
	return 0;
}

static int set_debug(struct hv_vcpu *v, const struct x86_cpu_state *st)
{
	struct kvm_debugregs d;

	if (!v->vm->has_debugregs)
		return 0;
	memset(&d, 0, sizeof(d));
	memcpy(d.db, st->debugregs.db, sizeof(d.db));
	d.dr6 = st->debugregs.dr6;
	d.dr7 = st->debugregs.dr7;
	return xioctl(v->fd, KVM_SET_DEBUGREGS, &d);
}

static int get_mp(struct hv_vcpu *v, struct x86_cpu_state *st)
{
	struct kvm_mp_state mp;

	/* Without an in-kernel irqchip every vCPU is simply runnable. */
	st->mp_state = xioctl(v->fd, KVM_GET_MP_STATE, &mp) ? KVM_MP_STATE_RUNNABLE : mp.mp_state;
	return 0;
}

static int set_mp(struct hv_vcpu *v, const struct x86_cpu_state *st)
{
	struct kvm_mp_state mp = {.mp_state = st->mp_state};

	if (st->mp_state == KVM_MP_STATE_RUNNABLE)
		return 0;
	return xioctl(v->fd, KVM_SET_MP_STATE, &mp);
}

struct state_part {
	unsigned part;
	const char *name;
	int (*get)(struct hv_vcpu *v, struct x86_cpu_state *st);
	int (*set)(struct hv_vcpu *v, const struct x86_cpu_state *st);
};

/* In restore order: control registers and EFER before the registers and
 * MSRs that depend on them; events last (they may refer to the rest). */
static const struct state_part state_parts[] = {
    {X86_PART_SREGS, "sregs", get_sregs, set_sregs},
    {X86_PART_REGS, "regs", get_regs, set_regs},
    {X86_PART_MSRS, "msrs", get_msrs, set_msrs},
    {X86_PART_FPU, "xsave", get_fpu, set_fpu},
    {X86_PART_XCRS, "xcrs", get_xcrs, set_xcrs},
    {X86_PART_DEBUG, "debugregs", get_debug, set_debug},
    {X86_PART_MP, "mp_state", get_mp, set_mp},
    {X86_PART_EVENTS, "events", get_events, set_events},
};

static int kvm_vcpu_get_state(struct hv_vcpu *v, struct x86_cpu_state *st, unsigned parts)
{
	for (unsigned i = 0; i < ARRAY_SIZE(state_parts); i++) {
		if (!(parts & state_parts[i].part))
			continue;
		int r = state_parts[i].get(v, st);
		if (r) {
			log_err("vcpu %u: reading %s: %s", v->index, state_parts[i].name,
				strerror(-r));
			return r;
		}
	}
	return 0;
}

static int kvm_vcpu_set_state(struct hv_vcpu *v, const struct x86_cpu_state *st, unsigned parts)
{
	for (unsigned i = 0; i < ARRAY_SIZE(state_parts); i++) {
		if (!(parts & state_parts[i].part))
			continue;
		int r = state_parts[i].set(v, st);
		if (r) {
			log_err("vcpu %u: writing %s: %s", v->index, state_parts[i].name,
				strerror(-r));
			return r;
		}
	}
	return 0;
}

const struct hv_ops kvm_hv_ops = {
    .name = "kvm",
    .vm_create = kvm_vm_create,
    .vm_destroy = kvm_vm_destroy,
    .vm_caps = kvm_vm_caps,
    .vm_map_memory = kvm_vm_map_memory,
    .vm_get_state = kvm_vm_get_state,
    .vm_set_state = kvm_vm_set_state,
    .vcpu_create = kvm_vcpu_create,
    .vcpu_destroy = kvm_vcpu_destroy,
    .vcpu_run = kvm_vcpu_run,
    .vcpu_complete = kvm_vcpu_complete,
    .vcpu_kick = kvm_vcpu_kick,
    .vcpu_get_state = kvm_vcpu_get_state,
    .vcpu_set_state = kvm_vcpu_set_state,
    .dirty_bitmap = &kvm_dirty_bitmap_ops,
    .dirty_ring = &kvm_dirty_ring_ops,
};
