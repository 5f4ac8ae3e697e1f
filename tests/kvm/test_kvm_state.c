// SPDX-License-Identifier: MIT
/*
 * vCPU and device state save/restore under real KVM: a running memcheck
 * guest is paused, its vCPU state (registers, system registers, XSAVE, XCRs,
 * MSRs, events, debug registers), the VM clock and the devices are saved;
 * a fresh VM gets a copy of the RAM and the saved state, resumes, keeps
 * rewriting its working set, then verifies every page from inside and the
 * VMM checks again from the host. A copy with one page damaged must fail
 * the same check: the test can fail.
 */
#include <string.h>

#include "common/util.h"
#include "tests/lib/guest_vm.h"
#include "tests/lib/test.h"

#define MEM   (64 * MiB)
#define VCPUS 2

static void move_guest(bool damage)
{
	struct vm *a =
	    guest_vm_create(MEM, VCPUS, "bitmap", MEM_ANON, "memcheck", "rounds=0 ws=2m", NULL);
	struct x86_cpu_state *st = calloc(VCPUS, sizeof(*st));
	struct x86_cpu_state *back = calloc(1, sizeof(*back));
	struct x86_vm_state vmst;
	struct vm_result res;
	uint64_t bad = 99, checked = 0;

	TEST_ASSERT_EQ(vm_start(a), 0);
	TEST_ASSERT_EQ(testdev_wait_progress(&a->testdev, VCPUS, 3, 60000), 0);
	TEST_ASSERT_EQ(vm_pause(a), 0);
	TEST_ASSERT_EQ(vm_save_cpus(a, st, &vmst), 0);
	TEST_ASSERT(st[0].nr_msrs > 5, "MSRs saved: %u", st[0].nr_msrs);
	TEST_ASSERT(st[0].xsave_size >= 4096, "XSAVE saved");
	/* (RFLAGS.IOPL reads back as 0 on some hosts, which virtualise it: the
	 * TSS I/O bitmap is what lets ring 3 reach the devices there.) */
	TEST_ASSERT(st[0].cs.dpl == 3 && st[0].ss.dpl == 3, "saved in ring 3: cs.dpl %u",
		    st[0].cs.dpl);
	size_t dsz = vm_devices_state_size(a);
	void *devs = malloc(dsz);
	vm_save_devices(a, devs);
	uint32_t progress = testdev_slot(&a->testdev, 0).progress;

	struct vm *b = guest_vm_create(MEM, VCPUS, "bitmap", MEM_ANON, "memcheck", "", NULL);
	memcpy(b->mem.regions[0].hva, a->mem.regions[0].hva, MEM);
	vm_destroy(a); /* the guest now exists only as the saved state and the copy */
	if (damage) {
		struct flit_bootinfo *bi = mem_gpa_to_hva(&b->mem, FLIT_BOOTINFO_GPA, 4096);
		uint64_t last = bi->check.first_page + bi->check.nr_pages - 1;
		uint8_t *p = mem_gpa_to_hva(&b->mem, last << 12, 4096);
		p[1000] ^= 0x40;
	}
	TEST_ASSERT_EQ(vm_restore_cpus(b, st, &vmst), 0);
	TEST_ASSERT_EQ(vm_restore_devices(b, devs), 0);
	for (unsigned i = 0; i < VCPUS; i++) {
		TEST_ASSERT_EQ(vcpu_get_state(b->vcpus[i], back, X86_PART_ALL), 0);
		TEST_ASSERT(back->rip == st[i].rip && back->rflags == st[i].rflags &&
				!memcmp(back->gpr, st[i].gpr, sizeof(back->gpr)),
			    "vcpu %u registers restored", i);
		TEST_ASSERT(back->cr3 == st[i].cr3 && back->efer == st[i].efer &&
				back->cs.selector == st[i].cs.selector,
			    "vcpu %u system registers restored", i);
		TEST_ASSERT(!memcmp(back->xsave, st[i].xsave, 512), "vcpu %u FPU/SSE restored", i);
	}
	/* A state that cannot fit this host is refused, and changes nothing. */
	st[0].xsave_size = 3;
	TEST_ASSERT(vcpu_set_state(b->vcpus[0], &st[0], X86_PART_FPU) < 0, "bad XSAVE size");

	TEST_ASSERT_EQ(vm_resume(b), 0);
	TEST_ASSERT_EQ(testdev_wait_progress(&b->testdev, VCPUS, progress + 3, 60000), 0);
	testdev_command(&b->testdev, -1, FLIT_CMD_VERIFY_EXIT);
	vm_wait(b, 60000, &res);
	TEST_ASSERT(!res.failed && !res.timed_out, "%s", res.reason);
	TEST_ASSERT_EQ(res.exit_status, damage ? 1 : 0);
	TEST_ASSERT_EQ(vm_verify_memcheck(b, &checked, &bad), 0);
	TEST_ASSERT_EQ(bad, damage ? 1 : 0);
	printf("  restored guest ran on from round %u; %llu pages checked, %llu bad\n", progress,
	       (unsigned long long)checked, (unsigned long long)bad);
	vm_destroy(b);
	free(devs);
	free(st);
	free(back);
}

static void save_restore_continues(void)
{
	move_guest(false);
}

static void damaged_copy_is_caught(void)
{
	move_guest(true);
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    TEST_CASE(save_restore_continues),
	    TEST_CASE(damaged_copy_is_caught),
	};
	return test_main(argc, argv, cases, ARRAY_SIZE(cases));
}
