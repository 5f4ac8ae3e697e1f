/* SPDX-License-Identifier: MIT */
/*
 * struct vm: one guest. Owns its memory, vCPUs, devices and dirty tracker;
 * no state outside it, so a source and a destination VM can live in one
 * process. All vm_* calls come from the VM's owner thread (main, or a
 * migration session that has taken the VM over) unless a function says
 * otherwise.
 *
 * Life cycle: vm_create -> vm_load_guest -> vm_start -> (vm_pause/vm_resume,
 * state save/restore, dirty tracking) -> vm_wait -> vm_destroy.
 */
#ifndef FLIT_VMM_VM_H
#define FLIT_VMM_VM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "arch/x86/cpu_state.h"
#include "dev/serial.h"
#include "dev/testdev.h"
#include "guests/abi.h"
#include "mem.h"
#include "vcpu.h"

struct hv_ops;
struct hv_vm;
struct dirty_ops;

#define VM_MAX_DEVS 4
/* Guest RAM below this is never dirty-logged (boot structures, boot info):
 * whoever needs every change there (a migration's last round) copies it. */
#define VM_UNTRACKED_BYTES    (1ULL << 20)
#define VM_DIRTY_RING_ENTRIES 65536 /* per vCPU: 1 MiB, so a round rarely fills it */

struct vm_config {
	uint64_t mem_size; /* bytes, multiple of 2 MiB, >= 4 MiB */
	uint32_t nr_vcpus; /* 1 .. FLIT_MAX_VCPUS */
	enum mem_backing backing;
	const char *dirty_track;     /* "bitmap" (default) or "ring" */
	uint32_t dirty_ring_entries; /* ring size per vCPU, power of 2; 0: default */
	bool prealloc;		     /* fault in all of guest RAM at creation */
	const struct hv_ops *hv;     /* NULL: KVM */
};

struct vm_dev {
	const struct dev_ops *ops;
	void *dev;
};

struct vm {
	const struct hv_ops *hv;
	struct hv_vm *hv_vm;
	struct vm_config cfg;
	struct guest_mem mem;
	uint32_t nr_vcpus;
	struct vcpu *vcpus[FLIT_MAX_VCPUS];

	struct serial serial;
	struct testdev testdev;
	struct vm_dev devs[VM_MAX_DEVS];
	unsigned nr_devs;

	/* guest image, set by vm_load_guest */
	uint64_t entry;
	uint64_t data_start;

	/* dirty tracking; owner thread, except vmm_dirty (atomic bits) */
	const struct dirty_ops *dirty;
	bool dirty_active;
	uint64_t *vmm_dirty;
	uint64_t vmm_dirty_new; /* atomic: bits newly set since the last collect */

	/* completion: vCPU threads notify on exit or failure */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int event_fd; /* readable after any vCPU exits or fails */
};

/* Result of a finished or failed VM. */
struct vm_result {
	bool failed; /* a vCPU failed (see reason) */
	bool timed_out;
	uint32_t exit_status; /* first non-zero vCPU exit status, else 0 */
	char reason[200];
};

int vm_create(const struct vm_config *cfg, struct vm **out);
/* Tolerates a half-built VM. Stops vCPU threads first. */
void vm_destroy(struct vm *vm);

/* Loads an ELF guest image from a file, builds boot tables and boot info
 * (args: "key=value ..." for the guest), sets every vCPU at the entry.
 * -ENOENT / -ENOEXEC etc. with a logged one-line reason. */
int vm_load_guest(struct vm *vm, const char *path, const char *args);

/* Resume every vCPU (the first start, too). */
int vm_start(struct vm *vm);
/* Pause every vCPU; on return no guest code runs. */
int vm_pause(struct vm *vm);
int vm_resume(struct vm *vm);

/* Wait until every vCPU has exited, or one has failed, or timeout_ms
 * passes (< 0: no limit). Fills *res. */
void vm_wait(struct vm *vm, int timeout_ms, struct vm_result *res);

/* Called by vCPU threads when their state changes to exited or failed. */
void vm_notify(struct vm *vm);

/* Dispatch a port access to a device (vCPU thread). Unclaimed ports read
 * as all ones and ignore writes. */
void vm_pio(struct vm *vm, struct vcpu *vcpu, uint16_t port, bool out, uint8_t size, uint8_t *data);

/* Guest memory access by the VMM itself. Writes are marked dirty while
 * tracking is on. -EFAULT if the range is not guest RAM. Any thread. */
int vm_write(struct vm *vm, uint64_t gpa, const void *buf, uint64_t len);
int vm_read(struct vm *vm, uint64_t gpa, void *buf, uint64_t len);
/* Mark a range the VMM changed by other means (e.g. a device's DMA). */
void vm_mark_dirty(struct vm *vm, uint64_t gpa, uint64_t len);

/* Dirty tracking through the configured tracker, with the VMM's own
 * writes ORed in. bitmap has one bit per page of guest RAM. */
int vm_dirty_start(struct vm *vm);
int vm_dirty_collect(struct vm *vm, uint64_t *bitmap);
int vm_dirty_stop(struct vm *vm);

/* Save / restore every vCPU's state (the VM must be paused). states has
 * nr_vcpus entries. */
int vm_save_cpus(struct vm *vm, struct x86_cpu_state *states, struct x86_vm_state *vmst);
int vm_restore_cpus(struct vm *vm, const struct x86_cpu_state *states,
		    const struct x86_vm_state *vmst);

/* Device state: every device's plain state struct, in device order. The
 * VM must be paused. restore refuses (-EINVAL) state a device rejects. */
size_t vm_devices_state_size(const struct vm *vm);
void vm_save_devices(struct vm *vm, void *buf);
int vm_restore_devices(struct vm *vm, const void *buf);

/* Host-side memcheck verification: checks every page the memcheck guest
 * published against its generation table. The VM must be paused or
 * finished. -ENODATA if the guest published no table, -EPROTO if what it
 * published is inconsistent. */
int vm_verify_memcheck(struct vm *vm, uint64_t *checked, uint64_t *bad);

/* The longest stall any vCPU of the memcheck guest saw between two of its
 * rounds (host wall time, microseconds), or 0 if it published none. */
uint64_t vm_memcheck_max_stall_us(struct vm *vm);
/* Starts the measure again (the guest may race one update; best effort). */
void vm_memcheck_reset_stall(struct vm *vm);

#endif
