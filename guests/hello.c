// SPDX-License-Identifier: MIT
/* hello: every vCPU says hello; exits 0. The smallest proof that a guest ran. */
#include "rt/rt.h"

int guest_main(struct guest *g)
{
	rt_printf("hello from vcpu %u of %u, %lu MiB of RAM\n", g->vcpu, g->nr_vcpus,
		  g->bi->mem_size >> 20);
	return 0;
}
