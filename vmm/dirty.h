/* SPDX-License-Identifier: MIT */
/*
 * Dirty-page tracking. A tracker reports, one bit per 4 KiB guest page, the
 * pages written since tracking started or since the last collect. Backends
 * (struct dirty_ops) report the guest's writes; the VM ORs in the writes the
 * VMM itself made into guest RAM (vm_mark_dirty), so a collected bitmap is
 * the complete set of changed pages.
 *
 * Page numbers are guest-physical (gpa >> 12) over [0, nr_pages). Pages
 * below VM_UNTRACKED_BYTES (vmm/vm.h) are not logged: only the VMM's own
 * writes there are reported.
 */
#ifndef FLIT_VMM_DIRTY_H
#define FLIT_VMM_DIRTY_H

#include <stdint.h>

struct hv_vm;
struct hv_vcpu;

struct dirty_ops {
	const char *name; /* "bitmap", "ring" */
	/* Begin logging on every memory slot. Owner thread. */
	int (*start)(struct hv_vm *vm);
	/* OR the pages dirtied since start or the last collect into bitmap and
	 * re-arm tracking for them (a write after collect returns is reported
	 * by the next collect). Owner thread; vCPUs may be running. */
	int (*collect)(struct hv_vm *vm, uint64_t *bitmap, uint64_t nr_pages);
	/* End logging. Owner thread. */
	int (*stop)(struct hv_vm *vm);
	/* Ring only: the vCPU's ring is full; harvest it. That vCPU's thread. */
	int (*ring_full)(struct hv_vcpu *vcpu);
};

/* The tracker named "bitmap" or "ring" from the backend's, or NULL. */
const struct dirty_ops *dirty_ops_by_name(const struct dirty_ops *bitmap,
					  const struct dirty_ops *ring, const char *name);

#endif
