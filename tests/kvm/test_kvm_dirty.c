// SPDX-License-Identifier: MIT
/*
 * Dirty tracking under real KVM, both trackers, as in the kernel's
 * dirty_log_test: the dirtyset guest writes a known, different set of pages
 * every round (some twice) and stops at a checkpoint; the VMM also writes
 * some pages itself. The collected set over the guest's data area must equal
 * the union exactly, round after round. Outside the data area only the
 * guest's stacks and image may appear (its own bookkeeping); the boot area
 * below 1 MiB is not logged, so nothing there may appear at all.
 */
#include <string.h>

#include "common/bitmap.h"
#include "common/util.h"
#include "guests/pattern.h"
#include "tests/lib/guest_vm.h"
#include "tests/lib/test.h"

struct dirty_check {
	struct vm *vm;
	uint64_t pages; /* dirtyset's pages */
	uint32_t seed;
	uint64_t first_gfn; /* data_start >> 12 */
	uint64_t *got, *vmm_expect;
	pthread_mutex_t lock;
	unsigned arrived;
	uint32_t rounds_checked;
	uint64_t total_pages;
	char failure[256]; /* first failure; checked by the main thread */
};

static void fail_once(struct dirty_check *c, const char *msg, uint32_t round, uint64_t a,
		      uint64_t b)
{
	if (!c->failure[0])
		snprintf(c->failure, sizeof(c->failure), "round %u: %s (%llu vs %llu)", round, msg,
			 (unsigned long long)a, (unsigned long long)b);
}

/* Runs on a vCPU thread at each vCPU's checkpoint; the last one to arrive
 * checks the round while the others wait at the guest's barrier. */
static void on_checkpoint(void *opaque, struct vcpu *vcpu, uint32_t round)
{
	struct dirty_check *c = opaque;
	struct vm *vm = c->vm;
	uint64_t nr = mem_nr_pages(&vm->mem);

	pthread_mutex_lock(&c->lock);
	if (++c->arrived < vm->nr_vcpus) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	c->arrived = 0;
	memset(c->got, 0, BITMAP_WORDS(nr) * 8);
	if (vm_dirty_collect(vm, c->got))
		fail_once(c, "collect failed", round, 0, 0);
	uint64_t missing = 0, extra = 0, outside = 0, want = 0;
	for (uint64_t i = 0; i < c->pages; i++) {
		uint64_t gfn = c->first_gfn + i;
		bool expect =
		    flit_dirtyset_selected(i, round, c->seed) || bitmap_test(c->vmm_expect, gfn);
		bool seen = bitmap_test(c->got, gfn);
		want += expect;
		missing += expect && !seen;
		extra += seen && !expect;
	}
	uint64_t bit;
	bitmap_for_each_set(bit, c->got, nr)
	{
		/* Beyond the data the guest touches: never. Below 1 MiB (boot
		 * structures, boot info): not logged at all. Between the two, only
		 * the guest's stacks and its image's data may appear. */
		bool bad = bit >= c->first_gfn + c->pages || bit < VM_UNTRACKED_BYTES / 4096;
		if (bad && outside < 8)
			printf("  round %u: page 0x%llx reported\n", round,
			       (unsigned long long)bit);
		outside += bad;
	}
	if (missing)
		fail_once(c, "pages written but not reported", round, missing, want);
	if (extra)
		fail_once(c, "pages reported but not written", round, extra, want);
	if (outside)
		fail_once(c, "unexpected pages outside the data area", round, outside, 0);
	c->total_pages += want;
	c->rounds_checked++;

	/* The VMM's own writes for the next round: a few pages, one of them
	 * twice, one spanning two pages. */
	memset(c->vmm_expect, 0, BITMAP_WORDS(nr) * 8);
	uint64_t v = round;
	for (unsigned k = 0; k < 4; k++) {
		uint64_t i = flit_mix(round * 31 + k) % (c->pages - 1);
		vm_write(vm, (c->first_gfn + i) << 12, &v, sizeof(v));
		bitmap_set(c->vmm_expect, c->first_gfn + i);
	}
	uint64_t i = flit_mix(round) % (c->pages - 1);
	vm_write(vm, ((c->first_gfn + i + 1) << 12) - 4, &v, sizeof(v));
	bitmap_set(c->vmm_expect, c->first_gfn + i);
	bitmap_set(c->vmm_expect, c->first_gfn + i + 1);
	pthread_mutex_unlock(&c->lock);
	(void)vcpu;
}

static void run_dirty(const char *mode, unsigned vcpus, uint64_t mem, uint64_t pages,
		      uint32_t rounds, uint32_t ring_entries)
{
	char args[128];
	struct dirty_check c = {.pages = pages, .seed = 7 + vcpus};
	pthread_mutex_init(&c.lock, NULL);

	snprintf(args, sizeof(args), "pages=%llu rounds=%u seed=%u", (unsigned long long)pages,
		 rounds, c.seed);
	c.vm = ring_entries ? guest_vm_create_ring(mem, vcpus, ring_entries, "dirtyset", args)
			    : guest_vm_create(mem, vcpus, mode, MEM_ANON, "dirtyset", args, NULL);
	uint64_t nr = mem_nr_pages(&c.vm->mem);
	c.got = bitmap_alloc(nr);
	c.vmm_expect = bitmap_alloc(nr);
	c.first_gfn = c.vm->data_start >> 12;
	c.vm->testdev.checkpoint = on_checkpoint;
	c.vm->testdev.checkpoint_opaque = &c;
	TEST_ASSERT_EQ(vm_dirty_start(c.vm), 0);
	struct vm_result res = guest_vm_run(c.vm, 300000);
	TEST_ASSERT(!res.failed && !res.timed_out, "%s", res.reason);
	TEST_ASSERT_EQ(res.exit_status, 0);
	TEST_ASSERT(!c.failure[0], "%s tracker, %u vCPUs: %s", mode, vcpus, c.failure);
	TEST_ASSERT_EQ(c.rounds_checked, rounds);
	printf("  %s, %u vCPU(s): %u rounds, %llu dirty pages matched exactly\n", mode, vcpus,
	       rounds, (unsigned long long)c.total_pages);
	TEST_ASSERT_EQ(vm_dirty_stop(c.vm), 0);
	vm_destroy(c.vm);
	free(c.got);
	free(c.vmm_expect);
}

static void bitmap_one_vcpu(void)
{
	run_dirty("bitmap", 1, 64 * MiB, 8192, 8, 0);
}

static void bitmap_two_vcpus(void)
{
	run_dirty("bitmap", 2, 64 * MiB, 8192, 8, 0);
}

static void ring_one_vcpu(void)
{
	run_dirty("ring", 1, 64 * MiB, 8192, 8, 0);
}

static void ring_two_vcpus(void)
{
	run_dirty("ring", 2, 64 * MiB, 8192, 8, 0);
}

/* About 8000 pages a round on one vCPU overflow a 4096-entry ring: KVM
 * exits with the ring full, the vCPU harvests, and nothing is lost. */
static void ring_full_harvest(void)
{
	run_dirty("ring", 1, 256 * MiB, 40000, 4, 4096);
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    TEST_CASE(bitmap_one_vcpu), TEST_CASE(bitmap_two_vcpus),  TEST_CASE(ring_one_vcpu),
	    TEST_CASE(ring_two_vcpus),	TEST_CASE(ring_full_harvest),
	};
	return test_main(argc, argv, cases, ARRAY_SIZE(cases));
}
