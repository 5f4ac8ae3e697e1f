/* SPDX-License-Identifier: MIT */
/* Helpers for tests that run guests under real KVM. */
#ifndef FLIT_TESTS_GUEST_VM_H
#define FLIT_TESTS_GUEST_VM_H

#include <pthread.h>

#include "vmm/vm.h"

/* Guest serial output kept for the test to search, and echoed. */
struct guest_log {
	pthread_mutex_t lock;
	char text[16384];
	size_t len;
};

/* Creates a VM under KVM with the named built-in guest loaded; skips the
 * test (exit 77) if KVM cannot create a VM here, fails it on other errors.
 * log may be NULL. */
struct vm *guest_vm_create(uint64_t mem, unsigned vcpus, const char *dirty,
			   enum mem_backing backing, const char *guest, const char *args,
			   struct guest_log *log);

/* The same with a dirty ring of 'ring_entries' per vCPU (0: default). */
struct vm *guest_vm_create_ring(uint64_t mem, unsigned vcpus, uint32_t ring_entries,
				const char *guest, const char *args);

/* Runs to completion (timeout_ms) and returns the result. */
struct vm_result guest_vm_run(struct vm *vm, int timeout_ms);

/* Tells the memcheck guest to verify itself and exit, waits, then checks
 * every page from the host side too; fails the test (naming where) unless
 * both find every page good. The VM is left paused. Returns the pages the
 * host checked. */
uint64_t guest_vm_verify_exit(struct vm *vm, const char *where);

/* 1 if the log holds the text. */
int guest_log_has(struct guest_log *log, const char *text);

#endif
