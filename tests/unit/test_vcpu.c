// SPDX-License-Identifier: MIT
/*
 * vCPU threads and their mailbox, on the fake hypervisor: pause really stops
 * guest entry, resume restarts it, state requests are served between
 * entries, many threads can post requests at once, and a guest exit or a
 * failed entry reaches vm_wait.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "tests/lib/fake_hv.h"
#include "tests/lib/test.h"
#include "vmm/vm.h"

static struct vm *make_vm(unsigned vcpus)
{
	struct vm_config cfg = {.mem_size = 8 * MiB, .nr_vcpus = vcpus, .hv = &fake_hv_ops};
	struct vm *vm = NULL;

	TEST_ASSERT_EQ(vm_create(&cfg, &vm), 0);
	return vm;
}

static uint64_t runs(struct vm *vm, unsigned i)
{
	return __atomic_load_n(&vm->vcpus[i]->hv->runs, __ATOMIC_ACQUIRE);
}

static void pause_stops_the_guest(void)
{
	struct vm *vm = make_vm(4);

	TEST_ASSERT_EQ(vcpu_get_run_state(vm->vcpus[0]), VCPU_PAUSED);
	usleep(5000);
	TEST_ASSERT_EQ(runs(vm, 0), 0); /* created paused: never entered */
	TEST_ASSERT_EQ(vm_start(vm), 0);
	for (int round = 0; round < 50; round++) {
		uint64_t before[4];
		for (unsigned i = 0; i < 4; i++)
			before[i] = runs(vm, i);
		/* Let every vCPU enter the guest a few times (4 busy threads on
		 * few cores: wait for each rather than for a fixed time). */
		for (unsigned i = 0; i < 4; i++)
			for (int t = 0; t < 2000 && runs(vm, i) < before[i] + 3; t++)
				usleep(500);
		TEST_ASSERT_EQ(vm_pause(vm), 0);
		uint64_t at_pause[4];
		for (unsigned i = 0; i < 4; i++) {
			at_pause[i] = runs(vm, i);
			TEST_ASSERT(at_pause[i] > before[i], "vcpu %u made progress while running",
				    i);
			TEST_ASSERT(!__atomic_load_n(&vm->vcpus[i]->hv->in_guest, __ATOMIC_ACQUIRE),
				    "vcpu %u inside the guest after pause returned", i);
		}
		usleep(1000);
		for (unsigned i = 0; i < 4; i++)
			TEST_ASSERT(runs(vm, i) == at_pause[i], "vcpu %u ran while paused", i);
		TEST_ASSERT_EQ(vm_resume(vm), 0);
	}
	vm_destroy(vm);
}

static void state_requests_need_a_stopped_vcpu(void)
{
	struct vm *vm = make_vm(2);
	struct x86_cpu_state *st = calloc(1, sizeof(*st));

	st->rip = 0x1234;
	st->gpr[X86_RAX] = 42;
	st->nr_msrs = 1;
	st->msrs[0] = (struct x86_msr){.index = 0x10, .data = 99};
	TEST_ASSERT_EQ(vcpu_set_state(vm->vcpus[1], st, X86_PART_ALL), 0);
	TEST_ASSERT_EQ(vm_start(vm), 0);
	TEST_ASSERT_EQ(vcpu_get_state(vm->vcpus[1], st, X86_PART_REGS), -EBUSY);
	TEST_ASSERT_EQ(vm_pause(vm), 0);
	memset(st, 0, sizeof(*st));
	TEST_ASSERT_EQ(vcpu_get_state(vm->vcpus[1], st, X86_PART_ALL), 0);
	TEST_ASSERT(st->rip == 0x1234 && st->gpr[X86_RAX] == 42, "registers round-trip");
	TEST_ASSERT(st->nr_msrs == 1 && st->msrs[0].data == 99, "MSRs round-trip");
	free(st);
	vm_destroy(vm);
}

struct hammer {
	struct vm *vm;
	int iterations;
	int errors;
};

static void *hammer_thread(void *arg)
{
	struct hammer *h = arg;
	struct x86_cpu_state *st = calloc(1, sizeof(*st));

	for (int i = 0; i < h->iterations; i++) {
		struct vcpu *v = h->vm->vcpus[i % h->vm->nr_vcpus];
		int r = vcpu_pause(v);
		if (r) {
			fprintf(stderr, "pause: %d\n", r);
			h->errors++;
		}
		r = vcpu_get_state(v, st, X86_PART_REGS);
		/* another thread may have resumed it in between */
		if (r && r != -EBUSY) {
			fprintf(stderr, "get_state: %d\n", r);
			h->errors++;
		}
		r = vcpu_resume(v);
		if (r) {
			fprintf(stderr, "resume: %d state %d\n", r, vcpu_get_run_state(v));
			h->errors++;
		}
	}
	free(st);
	return NULL;
}

static void concurrent_requests(void)
{
	struct vm *vm = make_vm(3);
	struct hammer h[4];
	pthread_t t[4];

	TEST_ASSERT_EQ(vm_start(vm), 0);
	for (int i = 0; i < 4; i++) {
		h[i] = (struct hammer){.vm = vm, .iterations = 500};
		pthread_create(&t[i], NULL, hammer_thread, &h[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		TEST_ASSERT_EQ(h[i].errors, 0);
	}
	/* Every pause was followed by its resume: all run again (wait for the
	 * scheduler rather than a fixed time; the machine may be busy). */
	for (unsigned i = 0; i < 3; i++) {
		TEST_ASSERT_EQ(vcpu_get_run_state(vm->vcpus[i]), VCPU_RUNNING);
		uint64_t r0 = runs(vm, i);
		for (int w = 0; w < 4000 && runs(vm, i) == r0; w++)
			usleep(500);
		TEST_ASSERT(runs(vm, i) > r0, "vcpu %u still running after the storm", i);
	}
	vm_destroy(vm);
}

static void guest_exit_reaches_wait(void)
{
	struct vm *vm = make_vm(2);
	struct vm_result res;

	fake_hv_last_vm()->exit_after = 20;
	fake_hv_last_vm()->exit_status = 5;
	TEST_ASSERT_EQ(vm_start(vm), 0);
	vm_wait(vm, 5000, &res);
	TEST_ASSERT(!res.failed && !res.timed_out, "%s", res.reason);
	TEST_ASSERT_EQ(res.exit_status, 5);
	TEST_ASSERT_EQ(vcpu_get_run_state(vm->vcpus[0]), VCPU_EXITED);
	/* An exited vCPU cannot be resumed, but its state can be read. */
	TEST_ASSERT_EQ(vcpu_resume(vm->vcpus[0]), -EINVAL);
	struct x86_cpu_state *st = calloc(1, sizeof(*st));
	TEST_ASSERT_EQ(vcpu_get_state(vm->vcpus[0], st, X86_PART_REGS), 0);
	free(st);
	/* progress was reported through the test device */
	TEST_ASSERT(testdev_slot(&vm->testdev, 1).progress >= 19, "progress seen");
	vm_destroy(vm);
}

static void wait_times_out(void)
{
	struct vm *vm = make_vm(1);
	struct vm_result res;

	TEST_ASSERT_EQ(vm_start(vm), 0);
	uint64_t t0 = now_ns();
	vm_wait(vm, 50, &res);
	TEST_ASSERT(res.timed_out && !res.failed, "timed out");
	TEST_ASSERT(now_ns() - t0 >= 50000000ULL, "waited the full 50 ms");
	vm_destroy(vm);
}

static void destroy_while_running(void)
{
	for (int i = 0; i < 20; i++) {
		struct vm *vm = make_vm(4);
		TEST_ASSERT_EQ(vm_start(vm), 0);
		vm_destroy(vm);
	}
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    TEST_CASE(pause_stops_the_guest), TEST_CASE(state_requests_need_a_stopped_vcpu),
	    TEST_CASE(concurrent_requests),   TEST_CASE(guest_exit_reaches_wait),
	    TEST_CASE(wait_times_out),	      TEST_CASE(destroy_while_running),
	};
	return test_main(argc, argv, cases, ARRAY_SIZE(cases));
}
