// SPDX-License-Identifier: MIT
/*
 * The test guests under real KVM: they boot in ring 3, report through the
 * serial port and the test device, and exit with the right status. memcheck
 * verifies its memory from inside and the VMM verifies it again from the
 * host; the corrupting flag makes both checks fail, which proves they can.
 */
#include <string.h>

#include "common/util.h"
#include "tests/lib/guest_vm.h"
#include "tests/lib/test.h"

static void hello_on_every_vcpu(void)
{
	struct guest_log log;
	struct vm *vm = guest_vm_create(64 * MiB, 2, "bitmap", MEM_ANON, "hello", "", &log);
	struct vm_result res = guest_vm_run(vm, 30000);

	TEST_ASSERT(!res.failed && !res.timed_out, "%s", res.reason);
	TEST_ASSERT_EQ(res.exit_status, 0);
	TEST_ASSERT(guest_log_has(&log, "hello from vcpu 0 of 2, 64 MiB"), "vcpu 0 spoke");
	TEST_ASSERT(guest_log_has(&log, "hello from vcpu 1 of 2"), "vcpu 1 spoke");
	vm_destroy(vm);
}

static void memcheck_case(const char *dirty, enum mem_backing backing, unsigned vcpus,
			  const char *args, uint32_t want_status, uint64_t want_bad)
{
	struct guest_log log;
	struct vm *vm = guest_vm_create(64 * MiB, vcpus, dirty, backing, "memcheck", args, &log);
	struct vm_result res = guest_vm_run(vm, 120000);
	uint64_t checked = 0, bad = 99, guest_bad = 99;

	TEST_ASSERT(!res.failed && !res.timed_out, "%s", res.reason);
	TEST_ASSERT_EQ(res.exit_status, want_status);
	TEST_ASSERT_EQ(testdev_wait_reports(&vm->testdev, vcpus, 1, 0, &guest_bad), 0);
	TEST_ASSERT_EQ(guest_bad, want_bad);
	TEST_ASSERT_EQ(vm_verify_memcheck(vm, &checked, &bad), 0);
	TEST_ASSERT(checked > 15000, "checked %llu pages", (unsigned long long)checked);
	TEST_ASSERT_EQ(bad, want_bad);
	vm_destroy(vm);
}

static void memcheck_passes(void)
{
	memcheck_case("bitmap", MEM_ANON, 2, "rounds=4 ws=2m", 0, 0);
}

static void memcheck_corrupt_fails(void)
{
	memcheck_case("bitmap", MEM_ANON, 2, "rounds=2 corrupt", 1, 1);
}

static void memcheck_ring_memfd_4vcpus(void)
{
	memcheck_case("ring", MEM_MEMFD, 4, "rounds=3 ws=8m", 0, 0);
}

static void memcheck_on_command(void)
{
	struct vm *vm =
	    guest_vm_create(32 * MiB, 2, "bitmap", MEM_ANON, "memcheck", "rounds=0", NULL);
	struct vm_result res;
	uint64_t bad = 99;

	TEST_ASSERT_EQ(vm_start(vm), 0);
	TEST_ASSERT_EQ(testdev_wait_progress(&vm->testdev, 2, 3, 60000), 0);
	testdev_command(&vm->testdev, -1, FLIT_CMD_VERIFY);
	TEST_ASSERT_EQ(testdev_wait_reports(&vm->testdev, 2, 1, 60000, &bad), 0);
	TEST_ASSERT_EQ(bad, 0);
	/* still running after a verify: more rounds */
	uint32_t p = testdev_slot(&vm->testdev, 0).progress;
	TEST_ASSERT_EQ(testdev_wait_progress(&vm->testdev, 2, p + 2, 60000), 0);
	testdev_command(&vm->testdev, -1, FLIT_CMD_VERIFY_EXIT);
	vm_wait(vm, 60000, &res);
	TEST_ASSERT(!res.failed && !res.timed_out, "%s", res.reason);
	TEST_ASSERT_EQ(res.exit_status, 0);
	TEST_ASSERT_EQ(testdev_wait_reports(&vm->testdev, 2, 2, 0, &bad), 0);
	TEST_ASSERT_EQ(bad, 0);
	vm_destroy(vm);
}

static void crash_is_reported(void)
{
	struct vm *vm = guest_vm_create(16 * MiB, 1, "bitmap", MEM_ANON, "hello", "crash", NULL);
	struct vm_result res = guest_vm_run(vm, 30000);

	TEST_ASSERT(res.failed, "an exception fails the VM");
	TEST_ASSERT(strstr(res.reason, "exception #UD (vector 6") != NULL, "reason: %s",
		    res.reason);
	vm_destroy(vm);
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    TEST_CASE(hello_on_every_vcpu),    TEST_CASE(memcheck_passes),
	    TEST_CASE(memcheck_corrupt_fails), TEST_CASE(memcheck_ring_memfd_4vcpus),
	    TEST_CASE(memcheck_on_command),    TEST_CASE(crash_is_reported),
	};
	return test_main(argc, argv, cases, ARRAY_SIZE(cases));
}
