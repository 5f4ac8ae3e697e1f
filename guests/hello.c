// SPDX-License-Identifier: MIT
/*
 * hello: every vCPU says hello; exits 0. The smallest proof that a guest ran.
 * With the argument "crash" it executes an invalid opcode instead: the
 * runtime's exception stub reports it, and the VMM must fail the guest
 * naming #UD and the rip.
 */
#include "rt/rt.h"

int guest_main(struct guest *g)
{
	rt_printf("hello from vcpu %u of %u, %lu MiB of RAM\n", g->vcpu, g->nr_vcpus,
		  g->bi->mem_size >> 20);
	if (rt_arg_str(g, "crash", 0, 0))
		__builtin_trap();
	return 0;
}
