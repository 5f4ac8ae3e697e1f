/* SPDX-License-Identifier: MIT */
/*
 * The hypervisor boundary. Everything in vmm/ above this line drives a VM
 * through struct hv_ops; vmm/kvm/ implements it with /dev/kvm, and unit
 * tests implement it with a fake. Backend state is opaque to the core.
 *
 * Thread rules: vm_* calls come from the thread that owns the VM (main or a
 * migration session); vcpu_run, vcpu_get_state and vcpu_set_state only from
 * that vCPU's own thread; vcpu_kick from any thread, at any time.
 */
#ifndef FLIT_VMM_HV_H
#define FLIT_VMM_HV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arch/x86/cpu_state.h"

struct hv_vm;
struct hv_vcpu;
struct dirty_ops;

enum hv_exit_reason {
	HV_EXIT_IO,	  /* port I/O: see io */
	HV_EXIT_INTR,	  /* kicked (vcpu_kick) or a signal: check the mailbox */
	HV_EXIT_SHUTDOWN, /* triple fault */
	HV_EXIT_HLT,
	HV_EXIT_MMIO,	    /* unhandled memory access outside RAM */
	HV_EXIT_DIRTY_FULL, /* dirty ring full: harvest, then run again */
	HV_EXIT_FAIL,	    /* entry failure or internal error: see detail */
};

struct hv_exit {
	enum hv_exit_reason reason;
	struct {
		uint16_t port;
		uint8_t size; /* 1, 2 or 4 */
		bool out;
		uint32_t count; /* repetitions (rep ins/outs) */
		uint8_t *data;	/* count * size bytes, in the backend's buffer */
	} io;
	uint64_t mmio_addr;
	uint64_t detail; /* backend-specific code for HV_EXIT_FAIL */
};

struct hv_caps {
	bool dirty_ring;     /* per-vCPU dirty rings are available */
	bool manual_protect; /* dirty bitmap with explicit clear */
	uint32_t tsc_khz;    /* 0 if unknown */
};

struct hv_vm_config {
	uint32_t nr_vcpus;
	uint32_t dirty_ring_entries; /* 0: no ring (the bitmap mode) */
	bool dirty_ring_fit;	     /* shrink the ring to the host's maximum */
};

struct hv_ops {
	const char *name;
	/* Create a VM: *out is the backend's VM. -ENODEV / -EACCES with a
	 * logged reason when the hypervisor cannot be used. */
	int (*vm_create)(const struct hv_vm_config *cfg, struct hv_vm **out);
	void (*vm_destroy)(struct hv_vm *vm);
	void (*vm_caps)(struct hv_vm *vm, struct hv_caps *caps);
	/* Map host memory [hva, hva + size) at guest-physical gpa as slot. */
	int (*vm_map_memory)(struct hv_vm *vm, uint32_t slot, uint64_t gpa, uint64_t size,
			     void *hva, bool log_dirty);
	int (*vm_get_state)(struct hv_vm *vm, struct x86_vm_state *st);
	int (*vm_set_state)(struct hv_vm *vm, const struct x86_vm_state *st);

	int (*vcpu_create)(struct hv_vm *vm, uint32_t index, struct hv_vcpu **out);
	void (*vcpu_destroy)(struct hv_vcpu *vcpu);
	/* Enter the guest until it exits; fills *exit. -errno on failure. */
	int (*vcpu_run)(struct hv_vcpu *vcpu, struct hv_exit *exit);
	/* Finish an operation the last exit left pending (the data of a port
	 * read, the rest of a string I/O) without running any guest code, so
	 * that the state read next is consistent. The vCPU's thread; NULL if the
	 * backend never leaves operations pending. */
	int (*vcpu_complete)(struct hv_vcpu *vcpu);
	/* Make a running or about-to-run vcpu_run return HV_EXIT_INTR soon. The
	 * caller also signals the vCPU thread (vcpu.c does). */
	void (*vcpu_kick)(struct hv_vcpu *vcpu);
	/* Read or write the parts (X86_PART_*) of the vCPU's state. */
	int (*vcpu_get_state)(struct hv_vcpu *vcpu, struct x86_cpu_state *st, unsigned parts);
	int (*vcpu_set_state)(struct hv_vcpu *vcpu, const struct x86_cpu_state *st, unsigned parts);

	/* Dirty trackers this backend offers, NULL if none. */
	const struct dirty_ops *dirty_bitmap;
	const struct dirty_ops *dirty_ring;
};

extern const struct hv_ops kvm_hv_ops;

#endif
