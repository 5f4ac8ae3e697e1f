// SPDX-License-Identifier: MIT
/*
 * The VM core on the fake hypervisor: the dirty set is the tracker's pages
 * OR the VMM's own writes, exactly, round after round; the host-side
 * memcheck verifier finds stale, misplaced and torn pages and refuses an
 * inconsistent table; device state save/restore refuses bad state.
 */
#include <errno.h>
#include <string.h>

#include "common/bitmap.h"
#include "common/util.h"
#include "guests/pattern.h"
#include "tests/lib/fake_hv.h"
#include "tests/lib/test.h"
#include "vmm/vm.h"

static struct vm *make_vm(uint64_t mem)
{
	struct vm_config cfg = {.mem_size = mem, .nr_vcpus = 2, .hv = &fake_hv_ops};
	struct vm *vm = NULL;

	TEST_ASSERT_EQ(vm_create(&cfg, &vm), 0);
	return vm;
}

static void dirty_set_is_guest_or_vmm(void)
{
	struct vm *vm = make_vm(8 * MiB);
	uint64_t pages = mem_nr_pages(&vm->mem);
	uint64_t *got = bitmap_alloc(pages), *want = bitmap_alloc(pages);
	uint64_t seed = 1;

	/* Writes before tracking starts are not reported. */
	uint64_t x = 1;
	TEST_ASSERT_EQ(vm_write(vm, 5 * 4096, &x, sizeof(x)), 0);
	TEST_ASSERT_EQ(vm_dirty_collect(vm, got), -EINVAL);
	TEST_ASSERT_EQ(vm_dirty_start(vm), 0);
	TEST_ASSERT_EQ(vm_dirty_start(vm), -EALREADY);
	for (int round = 0; round < 20; round++) {
		memset(want, 0, BITMAP_WORDS(pages) * 8);
		memset(got, 0, BITMAP_WORDS(pages) * 8);
		for (int k = 0; k < 50; k++) {
			seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
			uint64_t p = (seed >> 33) % pages;
			if (k % 2) {
				fake_guest_write(fake_hv_last_vm(), p);
				if (p < VM_UNTRACKED_BYTES / 4096)
					continue; /* the boot area is not logged */
			} else {
				/* a VMM write that spans two pages when it can */
				uint64_t gpa = p * 4096 + 4090;
				uint8_t buf[12] = {0};
				if (vm_write(vm, gpa, buf, sizeof(buf)) == 0 && p + 1 < pages)
					bitmap_set(want, p + 1);
				else
					continue;
			}
			bitmap_set(want, p);
		}
		TEST_ASSERT_EQ(vm_dirty_collect(vm, got), 0);
		TEST_ASSERT(!memcmp(got, want, BITMAP_WORDS(pages) * 8),
			    "round %d: %llu pages reported, %llu expected", round,
			    (unsigned long long)bitmap_weight(got, pages),
			    (unsigned long long)bitmap_weight(want, pages));
	}
	/* Nothing new: an empty set. */
	memset(got, 0, BITMAP_WORDS(pages) * 8);
	TEST_ASSERT_EQ(vm_dirty_collect(vm, got), 0);
	TEST_ASSERT_EQ(bitmap_weight(got, pages), 0);
	TEST_ASSERT_EQ(vm_dirty_stop(vm), 0);
	TEST_ASSERT_EQ(vm_write(vm, 5 * 4096, &x, sizeof(x)), 0);
	TEST_ASSERT_EQ(vm_dirty_collect(vm, got), -EINVAL);
	TEST_ASSERT_EQ(vm_write(vm, vm->mem.size - 4, &x, sizeof(x)), -EFAULT);
	free(got);
	free(want);
	vm_destroy(vm);
}

/* Lays out memory as the memcheck guest does, from the host side. */
static struct flit_check_desc *fake_memcheck(struct vm *vm, uint64_t n)
{
	struct flit_bootinfo *bi = mem_gpa_to_hva(&vm->mem, FLIT_BOOTINFO_GPA, sizeof(*bi));
	uint64_t table_gpa = 4 * MiB;
	uint32_t *table = mem_gpa_to_hva(&vm->mem, table_gpa, n * 4);
	uint64_t first = (table_gpa + ALIGN_UP(n * 4, 4096)) / 4096;

	for (uint64_t i = 0; i < n; i++) {
		table[i] = (uint32_t)(i % 7); /* includes generation 0: zero pages */
		flit_pattern_fill(mem_gpa_to_hva(&vm->mem, (first + i) * 4096, 4096), first + i,
				  table[i]);
	}
	bi->check = (struct flit_check_desc){
	    .magic = FLIT_CHECK_MAGIC, .table_gpa = table_gpa, .first_page = first, .nr_pages = n};
	for (int v = 0; v < FLIT_MAX_VCPUS; v++)
		bi->check.busy_page[v] = FLIT_CHECK_IDLE;
	return &bi->check;
}

static uint64_t verify(struct vm *vm, int expect_r)
{
	uint64_t checked = 0, bad = 0;
	int r = vm_verify_memcheck(vm, &checked, &bad);
	TEST_ASSERT(r == expect_r, "vm_verify_memcheck = %d, expected %d", r, expect_r);
	return bad;
}

static void host_check_finds_bad_pages(void)
{
	struct vm *vm = make_vm(16 * MiB);
	uint64_t n = 1000;

	TEST_ASSERT_EQ(verify(vm, -ENODATA), 0);
	struct flit_check_desc *d = fake_memcheck(vm, n);
	uint32_t *table = mem_gpa_to_hva(&vm->mem, d->table_gpa, n * 4);
	TEST_ASSERT_EQ(verify(vm, 0), 0);

	uint64_t *p10 = mem_gpa_to_hva(&vm->mem, (d->first_page + 10) * 4096, 4096);
	p10[100] ^= 1; /* one flipped bit */
	TEST_ASSERT_EQ(verify(vm, 0), 1);
	p10[100] ^= 1;

	table[20]++; /* stale page: content of the previous generation */
	TEST_ASSERT_EQ(verify(vm, 0), 1);
	table[20]--;

	/* misplaced page: page 31's content at page 30 */
	uint8_t save[4096];
	uint8_t *p30 = mem_gpa_to_hva(&vm->mem, (d->first_page + 30) * 4096, 4096);
	memcpy(save, p30, 4096);
	memcpy(p30, p30 + 4096, 4096);
	table[30] = table[31];
	TEST_ASSERT_EQ(verify(vm, 0), 1);
	memcpy(p30, save, 4096);
	table[30] = 30 % 7;
	TEST_ASSERT_EQ(verify(vm, 0), 0);

	/* A torn page (half new generation) passes only while a vCPU marks it busy. */
	uint64_t *p40 = mem_gpa_to_hva(&vm->mem, (d->first_page + 40) * 4096, 4096);
	uint64_t seed = flit_pattern_seed(d->first_page + 40, table[40] + 1);
	for (unsigned w = 0; w < 256; w++)
		p40[w] = flit_pattern_word(seed, w);
	TEST_ASSERT_EQ(verify(vm, 0), 1);
	d->busy_page[1] = 40;
	TEST_ASSERT_EQ(verify(vm, 0), 0);
	d->busy_page[1] = 41; /* busy elsewhere: torn page 40 is bad again */
	TEST_ASSERT_EQ(verify(vm, 0), 1);
	d->busy_page[1] = FLIT_CHECK_IDLE;

	/* A guest-written descriptor that points outside RAM is refused. */
	struct flit_check_desc good = *d;
	d->nr_pages = UINT64_MAX / 2;
	verify(vm, -EPROTO);
	*d = good;
	d->first_page = mem_nr_pages(&vm->mem) - 10;
	verify(vm, -EPROTO);
	*d = good;
	d->table_gpa = vm->mem.size - 8;
	verify(vm, -EPROTO);
	*d = good;
	d->nr_pages = 0;
	verify(vm, -EPROTO);
	vm_destroy(vm);
}

struct sink_ctx {
	char (*lines)[64];
	int *n;
};

static void sink(void *o, const char *l)
{
	struct sink_ctx *c = o;
	if (!c)
		return;
	snprintf(c->lines[*c->n], 64, "%s", l);
	(*c->n)++;
}

static void serial_lines_per_vcpu(void)
{
	struct vm *vm = make_vm(8 * MiB);
	struct serial *s = &vm->serial;
	char lines[4][64];
	int n = 0;
	struct sink_ctx ctx = {lines, &n};
	s->sink_opaque = &ctx;
	s->sink = sink;
	const char *a = "from zero\n", *b = "from one\n";
	for (size_t i = 0; i < 10; i++) {
		uint8_t c;
		c = (uint8_t)a[i];
		serial_ops.pio(s, vm->vcpus[0], 0, true, 1, &c);
		if (i < 9) {
			c = (uint8_t)b[i];
			serial_ops.pio(s, vm->vcpus[1], 0, true, 1, &c);
		}
	}
	TEST_ASSERT_EQ(n, 2);
	TEST_ASSERT(!strcmp(lines[0], "from one") && !strcmp(lines[1], "from zero"), "%s|%s",
		    lines[0], lines[1]);
	uint8_t lsr;
	serial_ops.pio(s, vm->vcpus[0], 5, false, 1, &lsr);
	TEST_ASSERT(lsr & 0x20, "transmitter always ready");
	/* state: save, restore, refuse reserved bits */
	uint8_t st[sizeof(struct serial_regs)];
	uint8_t v = 0x03;
	serial_ops.pio(s, vm->vcpus[0], 3, true, 1, &v); /* LCR */
	serial_ops.save(s, st);
	TEST_ASSERT_EQ(serial_ops.restore(s, st), 0);
	((struct serial_regs *)st)->ier = 0xff;
	TEST_ASSERT_EQ(serial_ops.restore(s, st), -EINVAL);
	s->sink_opaque = NULL; /* vm_destroy may flush; nothing is pending */
	vm_destroy(vm);
}

static void testdev_commands_and_state(void)
{
	struct vm *vm = make_vm(8 * MiB);
	struct testdev *t = &vm->testdev;
	uint32_t v;

	testdev_command(t, 1, FLIT_CMD_VERIFY);
	testdev_ops.pio(t, vm->vcpus[0], FLIT_TD_COMMAND, false, 4, (uint8_t *)&v);
	TEST_ASSERT_EQ(v, FLIT_CMD_NONE);
	testdev_ops.pio(t, vm->vcpus[1], FLIT_TD_COMMAND, false, 4, (uint8_t *)&v);
	TEST_ASSERT_EQ(v, FLIT_CMD_VERIFY);
	testdev_ops.pio(t, vm->vcpus[1], FLIT_TD_COMMAND, false, 4, (uint8_t *)&v);
	TEST_ASSERT_EQ(v, FLIT_CMD_NONE); /* read once */

	v = 3;
	testdev_ops.pio(t, vm->vcpus[0], FLIT_TD_REPORT_BAD, true, 4, (uint8_t *)&v);
	uint64_t bad = 0;
	TEST_ASSERT_EQ(testdev_wait_reports(t, 2, 1, 10, &bad), -ETIMEDOUT);
	v = 1;
	testdev_ops.pio(t, vm->vcpus[1], FLIT_TD_REPORT_BAD, true, 4, (uint8_t *)&v);
	TEST_ASSERT_EQ(testdev_wait_reports(t, 2, 1, 10, &bad), 0);
	TEST_ASSERT_EQ(bad, 4);

	struct testdev_state st;
	testdev_command(t, -1, FLIT_CMD_EXIT);
	testdev_ops.save(t, &st);
	TEST_ASSERT_EQ(testdev_ops.restore(t, &st), 0);
	st.slot[3].command = 99;
	TEST_ASSERT_EQ(testdev_ops.restore(t, &st), -EINVAL);
	/* wrong access sizes are ignored, reads give all ones */
	uint8_t b = 0;
	testdev_ops.pio(t, vm->vcpus[0], FLIT_TD_COMMAND, false, 1, &b);
	TEST_ASSERT_EQ(b, 0xff);
	vm_destroy(vm);
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    TEST_CASE(dirty_set_is_guest_or_vmm),
	    TEST_CASE(host_check_finds_bad_pages),
	    TEST_CASE(serial_lines_per_vcpu),
	    TEST_CASE(testdev_commands_and_state),
	};
	return test_main(argc, argv, cases, ARRAY_SIZE(cases));
}
