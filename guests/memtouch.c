// SPDX-License-Identifier: MIT
/*
 * memtouch: the dirtying workload. Writes one word per page over a hot set,
 * round after round, at a given rate.
 *
 * Arguments:
 *   mem=SIZE     area to use (default: all free RAM); touched once at start
 *   ws=SIZE      hot set rewritten every round (default: mem), split by vCPU
 *   pattern=seq|random   order of the writes in a round (default seq)
 *   rate=N       pages per second per vCPU, 0 = as fast as possible (needs
 *                the TSC frequency from the VMM; ignored without it)
 *   rounds=N     rounds, 0 = until the VMM commands exit (default 0)
 *   checkpoint   hit a checkpoint (id = round) after every round
 * Exit status 0.
 */
#include "rt/rt.h"

#define PAGE ((uint64_t)4096)

int guest_main(struct guest *g)
{
	uint64_t data = g->bi->data_start, end = g->bi->data_end;
	uint64_t n = (end - data) / PAGE;
	uint64_t want = rt_arg_u64(g, "mem", 0) / PAGE;
	char pat[16] = "seq";
	int random, checkpoint = rt_arg_str(g, "checkpoint", 0, 0);
	uint64_t rate = rt_arg_u64(g, "rate", 0), rounds = rt_arg_u64(g, "rounds", 0);
	uint64_t seed = 0x853c49e6748fea9bULL ^ ((uint64_t)g->vcpu << 17);

	if (want && want < n)
		n = want;
	uint64_t ws = rt_arg_u64(g, "ws", n * PAGE) / PAGE;
	if (ws > n)
		ws = n;
	rt_arg_str(g, "pattern", pat, sizeof(pat));
	random = !strcmp(pat, "random");

	uint64_t lo = n * g->vcpu / g->nr_vcpus, hi = n * (g->vcpu + 1) / g->nr_vcpus;
	uint64_t my_ws = ws / g->nr_vcpus;
	if (my_ws > hi - lo)
		my_ws = hi - lo;
	uint64_t tsc_per_page = (rate && g->bi->tsc_khz) ? g->bi->tsc_khz * 1000 / rate : 0;

	for (uint64_t i = lo; i < hi; i++)
		*(volatile uint64_t *)(data + i * PAGE) = i;
	rt_barrier(g);
	if (g->vcpu == 0)
		rt_printf("memtouch: %lu pages, hot set %lu, %s, rate %lu pages/s/vcpu\n", n, ws,
			  random ? "random" : "seq", rate);

	uint64_t next = rdtsc();
	for (uint64_t r = 1; !rounds || r <= rounds; r++) {
		for (uint64_t k = 0; k < my_ws; k++) {
			uint64_t i = lo + (random ? rt_rand(&seed) % my_ws : k);
			volatile uint64_t *w = (volatile uint64_t *)(data + i * PAGE);
			*w = *w + r;
			if (tsc_per_page) {
				next += tsc_per_page;
				while (rdtsc() < next)
					cpu_relax();
			}
		}
		rt_progress((uint32_t)r);
		if (checkpoint)
			rt_checkpoint((uint32_t)r);
		if (rt_command() == FLIT_CMD_EXIT)
			break;
	}
	return 0;
}
