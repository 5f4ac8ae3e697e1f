/* SPDX-License-Identifier: MIT */
/* KVM backend internals, shared by the vm/vcpu code and the dirty trackers.
 * The only headers in the project that include <linux/kvm.h>. */
#ifndef FLIT_VMM_KVM_PRIV_H
#define FLIT_VMM_KVM_PRIV_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../hv.h"
#include "compat.h"

#define KVM_MAX_SLOTS	   8
#define KVM_MAX_VCPUS_HERE 64

struct kvm_slot {
	bool used;
	uint32_t id;
	uint64_t gpa, size;
	void *hva;
	bool log_dirty;	   /* allowed to log (set at map time) */
	bool logging;	   /* KVM_MEM_LOG_DIRTY_PAGES currently set */
	uint64_t *log_buf; /* bitmap mode: KVM_GET_DIRTY_LOG buffer, owner thread */
};

struct hv_vm {
	int sys_fd; /* /dev/kvm */
	int vm_fd;
	int run_size;
	struct hv_caps caps;
	struct kvm_slot slots[KVM_MAX_SLOTS];
	/* vCPUs for the dirty ring harvest; written at vcpu create/destroy by
	 * the owner thread before/after they run. */
	struct hv_vcpu *vcpus[KVM_MAX_VCPUS_HERE];
	uint32_t ring_entries; /* 0: no ring */
	bool manual_protect;
	uint32_t xsave_size; /* bytes KVM_GET_XSAVE(2) returns */
	bool has_xcrs, has_debugregs, has_vcpu_events;
	/* MSRs that read back on this host: probed at the first vcpu create. */
	uint32_t msr_list[X86_MAX_MSRS];
	uint32_t nr_msrs;
	bool msrs_probed;
	struct kvm_cpuid2 *cpuid;
	/* Ring mode: pages harvested off the rings (by a vCPU whose ring was
	 * full, or by collect) and not yet handed to collect. Protected by
	 * ring_lock, as is every ring's fetch index. */
	pthread_mutex_t ring_lock;
	uint64_t *ring_pending;
	uint64_t ring_pending_pages;
	uint64_t ring_pending_lo, ring_pending_hi; /* dirty word range, lo > hi if none */
};

struct hv_vcpu {
	struct hv_vm *vm;
	uint32_t index;
	int fd;
	struct kvm_run *run;
	struct kvm_dirty_gfn *ring; /* NULL without a ring */
	uint32_t ring_fetch;	    /* protected by vm->ring_lock */
};

/* Harvests a vCPU's dirty ring into bitmap (nbits pages) and marks the
 * entries for reset; returns how many entries it took. With a NULL bitmap
 * the pages go to vm->ring_pending. Called with vm->ring_lock held. */
uint64_t kvm_ring_harvest_locked(struct hv_vcpu *vcpu, uint64_t *bitmap, uint64_t nbits);

/* Set or clear KVM_MEM_LOG_DIRTY_PAGES on every loggable slot. */
int kvm_set_dirty_logging(struct hv_vm *vm, bool on);

extern const struct dirty_ops kvm_dirty_bitmap_ops;
extern const struct dirty_ops kvm_dirty_ring_ops;

#endif
