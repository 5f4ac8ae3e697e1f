// SPDX-License-Identifier: MIT
/*
 * precopy-default: iterate until the estimated downtime (pages still dirty
 * at the bandwidth just measured) is under the limit, or the round limit is
 * hit. Auto-converge like QEMU's: when the guest dirties more than half as
 * many bytes as a round moved, throttle its vCPUs, 20 % at first, 10 % more
 * each round the condition holds, at most 99 %.
 */
#include <stdio.h>
#include <string.h>

#include "migrate.h"
#include "policy.h"

#define THROTTLE_INITIAL   20
#define THROTTLE_INCREMENT 10
#define THROTTLE_MAX	   99

static bool precopy_should_stop(const struct mig_params *p, const struct mig_round_stats *s)
{
	return s->est_downtime_ms <= (double)p->downtime_limit_ms || s->round >= p->max_rounds;
}

static uint32_t precopy_throttle(const struct mig_params *p, const struct mig_round_stats *s)
{
	if (!p->auto_converge || s->round < 2)
		return s->throttle_pct;
	if ((double)s->dirty_pages * 4096.0 <= 0.5 * (double)s->sent_bytes)
		return s->throttle_pct;
	uint32_t t = s->throttle_pct ? s->throttle_pct + THROTTLE_INCREMENT : THROTTLE_INITIAL;
	return t > THROTTLE_MAX ? THROTTLE_MAX : t;
}

const struct mig_policy_ops mig_policy_precopy_default = {
    .name = "precopy-default",
    .modes = 1u << MIG_MODE_PRECOPY | 1u << MIG_MODE_MEMSVC,
    .should_stop = precopy_should_stop,
    .throttle = precopy_throttle,
};

static const struct mig_policy_ops *const policies[] = {
    &mig_policy_precopy_default,  &mig_policy_hybrid_default,	 &mig_policy_hybrid_recent,
    &mig_policy_postcopy_default, &mig_policy_postcopy_prefetch, &mig_policy_postcopy_yield,
};

const struct mig_policy_ops *mig_policy_by_name(const char *name)
{
	if (!name)
		return &mig_policy_precopy_default;
	for (unsigned i = 0; i < sizeof(policies) / sizeof(policies[0]); i++)
		if (!strcmp(name, policies[i]->name))
			return policies[i];
	return NULL;
}

const char *mig_policy_names(void)
{
	static char names[256];

	if (!names[0])
		for (unsigned i = 0; i < sizeof(policies) / sizeof(policies[0]); i++)
			snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
				 i ? ", " : "", policies[i]->name);
	return names;
}

const struct mig_policy_ops *mig_policy_for_mode(int mode)
{
	return mode == MIG_MODE_HYBRID	   ? &mig_policy_hybrid_default
	       : mode == MIG_MODE_POSTCOPY ? &mig_policy_postcopy_default
					   : &mig_policy_precopy_default;
}
