// SPDX-License-Identifier: MIT
/*
 * hybrid-default: pre-copy rounds while they pay, then post-copy. Iterate
 * like precopy-default (until the estimated downtime is under the limit,
 * or the round limit), but also stop as soon as a round fails to shrink
 * the dirty set by a fifth: the guest writes as fast as we send, so more
 * rounds only resend the same pages. The switch then happens in post-copy,
 * which needs no convergence; the vCPUs are never throttled.
 */
#include "migrate.h"
#include "policy.h"

static bool hybrid_should_stop(const struct mig_params *p, const struct mig_round_stats *s)
{
	if (mig_policy_precopy_default.should_stop(p, s))
		return true;
	return s->round >= 2 && s->prev_dirty_pages &&
	       (double)s->dirty_pages > 0.8 * (double)s->prev_dirty_pages;
}

static uint32_t hybrid_throttle(const struct mig_params *p, const struct mig_round_stats *s)
{
	(void)p;
	(void)s;
	return 0;
}

const struct mig_policy_ops mig_policy_hybrid_default = {
    .name = "hybrid-default",
    .modes = 1u << MIG_MODE_HYBRID,
    .should_stop = hybrid_should_stop,
    .throttle = hybrid_throttle,
};
