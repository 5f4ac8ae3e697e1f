// SPDX-License-Identifier: MIT
/*
 * Post-copy policies: the order of the background push after the switch,
 * and the pages that go with a fault's answer.
 *
 * postcopy-default: push in guest order, send only the faulted page.
 * postcopy-prefetch: the same push, and a fault's answer brings the next
 *   31 pages not pushed yet along (a guest that walks its memory faults
 *   once per 128 KiB instead of once per page).
 * postcopy-yield: postcopy-default, and the destination's push gives way
 *   to faults every 16 pages: on a host whose kernel does not preempt and
 *   whose CPUs the push keeps busy, a fault's answer waits for one system
 *   call of the push, and a shorter one shortens the fault tail.
 * hybrid-recent: hybrid-default's rounds; after the switch, the chunks the
 *   guest wrote in the latest rounds go first (its working set: those are
 *   the pages it will touch first at the destination), with the prefetch.
 */
#include <stdlib.h>

#include "migrate.h"
#include "policy.h"

#define PREFETCH_PAGES 31

static uint32_t prefetch_some(const struct mig_params *p)
{
	(void)p;
	return PREFETCH_PAGES;
}

/* Newest write first; then more pages written first; then guest order. */
static int by_recency(const void *a, const void *b, void *arg)
{
	const struct mig_push_hint *h = arg;
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	if (h->last_round[x] != h->last_round[y])
		return h->last_round[x] > h->last_round[y] ? -1 : 1;
	if (h->written[x] != h->written[y])
		return h->written[x] > h->written[y] ? -1 : 1;
	return (x > y) - (x < y);
}

static void recent_first(const struct mig_params *p, const struct mig_push_hint *h, uint64_t *order)
{
	(void)p;
	for (uint64_t c = 0; c < h->nr_chunks; c++)
		order[c] = c;
	qsort_r(order, h->nr_chunks, sizeof(*order), by_recency, (void *)h);
}

static uint32_t no_throttle(const struct mig_params *p, const struct mig_round_stats *s)
{
	(void)p;
	(void)s;
	return 0;
}

static bool stop_at_once(const struct mig_params *p, const struct mig_round_stats *s)
{
	(void)p;
	(void)s;
	return true;
}

const struct mig_policy_ops mig_policy_postcopy_default = {
    .name = "postcopy-default",
    .modes = 1u << MIG_MODE_POSTCOPY,
    .should_stop = stop_at_once,
    .throttle = no_throttle,
};

const struct mig_policy_ops mig_policy_postcopy_prefetch = {
    .name = "postcopy-prefetch",
    .modes = 1u << MIG_MODE_POSTCOPY,
    .should_stop = stop_at_once,
    .throttle = no_throttle,
    .prefetch = prefetch_some,
};

const struct mig_policy_ops mig_policy_postcopy_yield = {
    .name = "postcopy-yield",
    .modes = 1u << MIG_MODE_POSTCOPY,
    .should_stop = stop_at_once,
    .throttle = no_throttle,
    .push_yields = true,
};

static bool hybrid_stop(const struct mig_params *p, const struct mig_round_stats *s)
{
	return mig_policy_hybrid_default.should_stop(p, s);
}

const struct mig_policy_ops mig_policy_hybrid_recent = {
    .name = "hybrid-recent",
    .modes = 1u << MIG_MODE_HYBRID,
    .should_stop = hybrid_stop,
    .throttle = no_throttle,
    .push_order = recent_first,
    .prefetch = prefetch_some,
};
