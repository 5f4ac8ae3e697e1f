// SPDX-License-Identifier: MIT
/*
 * memcheck: fills its memory with a pattern derived from (page, generation),
 * keeps rewriting a working set while recording every page's generation in
 * a table, and verifies every page on request or at the end.
 *
 * Arguments (words "key=value"):
 *   mem=SIZE    memory to check (default: all free RAM minus the table)
 *   ws=SIZE     working set rewritten every round (default 4m, split by vCPU);
 *               ws=0 is an idle guest: it sleeps 1 ms between rounds
 *   rounds=N    rounds before the final verify (default 8); 0 = run until
 *               the VMM commands verify-and-exit or exit
 *   order=random  each round rewrites ws pages picked at random from the
 *               vCPU's whole slice (random writes over all of memory), not
 *               the first ws pages in order (a hot set)
 *   rate=N      pages rewritten per second per vCPU, 0 = as fast as it can
 *               (needs the TSC frequency from the VMM); a vCPU that falls
 *               behind (paused, throttled) does not catch up in a burst
 *   corrupt     flip one word of one page outside the working set behind
 *               the table's back, so the verify must fail (tests prove the
 *               check can fail)
 * Exit status: 0 if every page verified, 1 if any was bad.
 * Each vCPU owns a contiguous slice of the pages; the table and the busy
 * page of each vCPU are published in the boot info for the host-side check,
 * with the longest stall each vCPU saw between two rounds (host wall time).
 */
#include "../guests/pattern.h"
#include "rt/rt.h"

#define PAGE ((uint64_t)4096)

static volatile uint32_t *table;
static uint64_t first_page, nr_pages;

static volatile uint64_t *page_ptr(uint64_t i)
{
	return (volatile uint64_t *)((first_page + i) * PAGE);
}

static void write_page(struct guest *g, uint64_t i, uint32_t gen)
{
	g->bi->check.busy_page[g->vcpu] = i;
	barrier();
	flit_pattern_fill(page_ptr(i), first_page + i, gen);
	barrier();
	table[i] = gen;
	barrier();
	g->bi->check.busy_page[g->vcpu] = FLIT_CHECK_IDLE;
}

static uint32_t verify(uint64_t lo, uint64_t hi)
{
	uint32_t bad = 0;

	for (uint64_t i = lo; i < hi; i++) {
		if (!flit_pattern_check(page_ptr(i), first_page + i, table[i])) {
			if (bad < 4)
				rt_printf("memcheck: page %lu (gpa 0x%lx) bad, generation %u\n", i,
					  (first_page + i) * PAGE, table[i]);
			bad++;
		}
	}
	return bad;
}

int guest_main(struct guest *g)
{
	uint64_t data = g->bi->data_start, end = g->bi->data_end;
	uint64_t total = (end - data) / PAGE;
	uint64_t want = rt_arg_u64(g, "mem", 0) / PAGE;
	uint64_t ws = rt_arg_u64(g, "ws", 4 << 20) / PAGE;
	uint64_t rounds = rt_arg_u64(g, "rounds", 8);
	int corrupt = rt_arg_str(g, "corrupt", 0, 0);
	uint64_t rate = rt_arg_u64(g, "rate", 0);
	char order[16] = "";
	rt_arg_str(g, "order", order, sizeof(order));
	int random = order[0] == 'r';
	uint64_t tsc_per_page = (rate && g->bi->tsc_khz) ? g->bi->tsc_khz * 1000 / rate : 0;

	/* table_pages * 1024 + data pages <= total */
	uint64_t n = total - (total + 1024) / 1025;
	if (want && want < n)
		n = want;
	uint64_t table_pages = (n * 4 + PAGE - 1) / PAGE;
	table = (volatile uint32_t *)data;
	first_page = data / PAGE + table_pages;
	nr_pages = n;

	uint64_t lo = n * g->vcpu / g->nr_vcpus, hi = n * (g->vcpu + 1) / g->nr_vcpus;
	uint64_t my_ws = ws / g->nr_vcpus;
	if (my_ws > hi - lo)
		my_ws = hi - lo;
	if (corrupt && g->vcpu == 0 && my_ws == hi - lo && my_ws)
		my_ws--; /* keep the corrupted page out of the working set */

	g->bi->check.busy_page[g->vcpu] = FLIT_CHECK_IDLE;
	for (uint64_t i = lo; i < hi; i++)
		write_page(g, i, 1);
	if (corrupt && g->vcpu == 0 && hi > lo) {
		/* The slice's last page: outside the working set unless ws covers it. */
		page_ptr(hi - 1)[7] ^= 0x100;
	}
	rt_barrier(g);
	if (g->vcpu == 0) {
		g->bi->check.table_gpa = data;
		g->bi->check.first_page = first_page;
		g->bi->check.nr_pages = nr_pages;
		barrier();
		g->bi->check.magic = FLIT_CHECK_MAGIC;
		rt_printf("memcheck: %lu pages filled on %u vcpus, working set %lu pages, %s\n", n,
			  g->nr_vcpus, my_ws * g->nr_vcpus,
			  rounds ? "fixed rounds" : "running until told");
	}

	uint32_t gen = 1;
	uint64_t next = rdtsc(), last_us = rt_host_time_us();
	uint64_t x = 0x9e3779b97f4a7c15ULL * (g->vcpu + 1); /* xorshift64 state */
	g->bi->check.max_stall_us[g->vcpu] = 0;
	for (uint64_t r = 1;; r++) {
		gen++;
		for (uint64_t k = 0; k < my_ws; k++) {
			uint64_t i = lo + k;
			if (random) {
				x ^= x << 13;
				x ^= x >> 7;
				x ^= x << 17;
				i = lo + x % (hi - lo);
			}
			write_page(g, i, gen);
			if (tsc_per_page) {
				uint64_t now = rdtsc();
				next += tsc_per_page;
				if (now > next + 100 * tsc_per_page)
					next = now; /* fell behind: no burst to catch up */
				while (rdtsc() < next)
					cpu_relax();
			}
		}
		uint64_t now_us = rt_host_time_us();
		if (now_us - last_us > g->bi->check.max_stall_us[g->vcpu])
			g->bi->check.max_stall_us[g->vcpu] = now_us - last_us;
		last_us = now_us;
		rt_progress((uint32_t)r);
		if (!my_ws)
			rt_sleep_us(1000);

		uint32_t cmd = rt_command();
		if (cmd == FLIT_CMD_EXIT)
			return 0;
		if (cmd == FLIT_CMD_VERIFY || cmd == FLIT_CMD_VERIFY_EXIT ||
		    (rounds && r >= rounds)) {
			uint32_t bad = verify(lo, hi);
			rt_report_bad(bad);
			rt_printf("memcheck: vcpu %u verified %lu pages after round %lu: %u bad\n",
				  g->vcpu, hi - lo, r, bad);
			if (cmd != FLIT_CMD_VERIFY)
				return bad ? 1 : 0;
		}
	}
}
