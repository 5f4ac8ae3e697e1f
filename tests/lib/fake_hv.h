/* SPDX-License-Identifier: MIT */
/*
 * A fake hypervisor behind struct hv_ops, for unit tests of the VMM core
 * without /dev/kvm: the only mock in the project, at the hypervisor
 * boundary. A fake vCPU "runs" by spinning for a few microseconds (or until
 * kicked), then makes a port write to the test device: PROGRESS with its run
 * count, and EXIT with exit_status once it has run exit_after times. Its
 * state is a stored struct x86_cpu_state. Its dirty tracker reports the
 * pages that tests mark with fake_guest_write().
 */
#ifndef FLIT_TESTS_FAKE_HV_H
#define FLIT_TESTS_FAKE_HV_H

#include <pthread.h>
#include <stdint.h>

#include "vmm/hv.h"

#define FAKE_MAX_VCPUS 32

struct hv_vm {
	struct hv_caps caps;
	struct hv_vcpu *vcpus[FAKE_MAX_VCPUS];
	pthread_mutex_t lock;
	uint64_t *dirty; /* protected by lock */
	uint64_t nr_pages;
	uint64_t unlogged_pages; /* pages below this are in a slot not logged */
	int logging;
	uint64_t exit_after; /* 0: never exit */
	uint32_t exit_status;
	struct x86_vm_state vmst;
};

struct hv_vcpu {
	struct hv_vm *vm;
	uint32_t index;
	int kicked;    /* atomic */
	int in_guest;  /* atomic: inside the fake guest right now */
	uint64_t runs; /* atomic: completed guest entries */
	uint32_t io_word;
	struct x86_cpu_state st;
};

extern const struct hv_ops fake_hv_ops;

/* The most recent fake VM created (tests create one at a time). */
struct hv_vm *fake_hv_last_vm(void);
/* A "guest" write to page: reported by the next collect while logging,
 * unless the page lies in a slot mapped without dirty logging. */
void fake_guest_write(struct hv_vm *vm, uint64_t page);

#endif
