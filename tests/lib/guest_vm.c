// SPDX-License-Identifier: MIT
#include "guest_vm.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "test.h"

static void log_sink(void *opaque, const char *line)
{
	struct guest_log *l = opaque;
	size_t n = strlen(line);

	printf("  guest: %s\n", line);
	pthread_mutex_lock(&l->lock);
	if (l->len + n + 2 < sizeof(l->text)) {
		memcpy(l->text + l->len, line, n);
		l->text[l->len + n] = '\n';
		l->len += n + 1;
		l->text[l->len] = 0;
	}
	pthread_mutex_unlock(&l->lock);
}

int guest_log_has(struct guest_log *log, const char *text)
{
	pthread_mutex_lock(&log->lock);
	int r = strstr(log->text, text) != NULL;
	pthread_mutex_unlock(&log->lock);
	return r;
}

static struct vm *create(const struct vm_config *cfg, const char *guest, const char *args,
			 struct guest_log *log)
{
	struct vm *vm = NULL;
	char rel[64];
	int r = vm_create(cfg, &vm);

	if (r == -ENOENT || r == -ENODEV || r == -EACCES || r == -EPERM || r == -ENXIO)
		test_skip("KVM cannot create a VM on this host (run through tools/flit-lab)");
	TEST_ASSERT(r == 0, "vm_create: %s", strerror(-r));
	if (log) {
		memset(log, 0, sizeof(*log));
		pthread_mutex_init(&log->lock, NULL);
		vm->serial.sink = log_sink;
		vm->serial.sink_opaque = log;
	}
	snprintf(rel, sizeof(rel), "guests/%s.elf", guest);
	r = vm_load_guest(vm, test_build_path(rel), args);
	TEST_ASSERT(r == 0, "loading %s: %s", guest, strerror(-r));
	return vm;
}

struct vm *guest_vm_create(uint64_t mem, unsigned vcpus, const char *dirty,
			   enum mem_backing backing, const char *guest, const char *args,
			   struct guest_log *log)
{
	struct vm_config cfg = {
	    .mem_size = mem, .nr_vcpus = vcpus, .backing = backing, .dirty_track = dirty};
	return create(&cfg, guest, args, log);
}

struct vm *guest_vm_create_ring(uint64_t mem, unsigned vcpus, uint32_t ring_entries,
				const char *guest, const char *args)
{
	struct vm_config cfg = {.mem_size = mem,
				.nr_vcpus = vcpus,
				.dirty_track = "ring",
				.dirty_ring_entries = ring_entries};
	return create(&cfg, guest, args, NULL);
}

struct vm_result guest_vm_run(struct vm *vm, int timeout_ms)
{
	struct vm_result res;

	TEST_ASSERT_EQ(vm_start(vm), 0);
	vm_wait(vm, timeout_ms, &res);
	vm_pause(vm);
	return res;
}

uint64_t guest_vm_verify_exit(struct vm *vm, const char *where)
{
	struct vm_result res;
	uint64_t checked = 0, bad = 99;

	testdev_command(&vm->testdev, -1, FLIT_CMD_VERIFY_EXIT);
	vm_wait(vm, 120000, &res);
	TEST_ASSERT(!res.failed && !res.timed_out, "%s: %s", where, res.reason);
	TEST_ASSERT(res.exit_status == 0, "%s: the guest found bad pages", where);
	vm_pause(vm);
	TEST_ASSERT_EQ(vm_verify_memcheck(vm, &checked, &bad), 0);
	TEST_ASSERT(bad == 0, "%s: host check found %llu bad pages", where,
		    (unsigned long long)bad);
	printf("  %s: guest verified itself, host checked %llu pages: all good\n", where,
	       (unsigned long long)checked);
	return checked;
}
