// SPDX-License-Identifier: MIT
/*
 * dirtyset: writes a known, different set of pages every round, some of them
 * twice, then stops at a checkpoint (id = round) so the VMM can compare its
 * dirty log with flit_dirtyset_selected(). Pages are split among vCPUs; the
 * vCPUs meet at a barrier before each checkpoint.
 *
 * Arguments: pages=N (default 4096), rounds=N (default 8), seed=N (default 1).
 */
#include "../guests/pattern.h"
#include "rt/rt.h"

#define PAGE ((uint64_t)4096)

int guest_main(struct guest *g)
{
	uint64_t data = g->bi->data_start;
	uint64_t n = rt_arg_u64(g, "pages", 4096), rounds = rt_arg_u64(g, "rounds", 8);
	uint32_t seed = (uint32_t)rt_arg_u64(g, "seed", 1);

	if (n > (g->bi->data_end - data) / PAGE)
		return 2;
	uint64_t lo = n * g->vcpu / g->nr_vcpus, hi = n * (g->vcpu + 1) / g->nr_vcpus;

	for (uint32_t r = 1; r <= rounds; r++) {
		for (uint64_t i = lo; i < hi; i++) {
			if (!flit_dirtyset_selected(i, r, seed))
				continue;
			volatile uint64_t *w = (volatile uint64_t *)(data + i * PAGE);
			w[r % 512] = r;
			if (flit_dirtyset_twice(i, r, seed))
				w[(r + 7) % 512] = r;
		}
		rt_barrier(g);
		rt_checkpoint(r);
		rt_barrier(g);
	}
	return 0;
}
