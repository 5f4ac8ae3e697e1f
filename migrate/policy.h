/* SPDX-License-Identifier: MIT */
/*
 * Migration policies: the research surface. A policy decides, after every
 * pre-copy round, whether to stop iterating (and pause the guest for the
 * last copy; in hybrid mode, switch to post-copy) and how hard to throttle
 * the vCPUs (auto-converge). Adding a
 * policy is one file with one const struct mig_policy_ops. Called on the
 * migration thread; must not block.
 */
#ifndef FLIT_MIGRATE_POLICY_H
#define FLIT_MIGRATE_POLICY_H

#include <stdbool.h>
#include <stdint.h>

struct mig_params;

struct mig_round_stats {
	uint32_t round;	     /* 1 = the full first pass */
	uint64_t sent_pages; /* sent in this round (data and zero) */
	uint64_t sent_bytes;
	double round_ms;
	double bandwidth;	   /* bytes/s measured over this round */
	uint64_t dirty_pages;	   /* dirtied during this round: next round's work */
	uint64_t prev_dirty_pages; /* the same after the round before (0 in round 1) */
	double dirty_rate;	   /* pages/s during this round */
	double est_downtime_ms;	   /* dirty_pages at the measured bandwidth */
	uint32_t throttle_pct;	   /* in force during this round */
};

struct mig_policy_ops {
	const char *name;
	/* true: stop iterating now. */
	bool (*should_stop)(const struct mig_params *p, const struct mig_round_stats *cur);
	/* The throttle for the next round, 0..99 (% of time vCPUs are paused). */
	uint32_t (*throttle)(const struct mig_params *p, const struct mig_round_stats *cur);
};

extern const struct mig_policy_ops mig_policy_precopy_default;
extern const struct mig_policy_ops mig_policy_hybrid_default;

/* By name ("precopy-default"), or NULL. */
const struct mig_policy_ops *mig_policy_by_name(const char *name);

#endif
