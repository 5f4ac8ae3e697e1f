/* SPDX-License-Identifier: MIT */
/*
 * Migration policies: the research surface. A policy decides, after every
 * pre-copy round, whether to stop iterating (and pause the guest for the
 * last copy; in hybrid mode, switch to post-copy) and how hard to throttle
 * the vCPUs (auto-converge); and after a post-copy switch, in which order
 * the background push goes and how many pages go with a fault's answer.
 * Adding a policy is one file with one const struct mig_policy_ops, and a
 * line in the table of policy_precopy.c. Called on the migration thread;
 * must not block.
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

/* What the source saw of the guest's writes, for a post-copy push order:
 * per 2 MiB chunk (pages chunk * 512 ..), the last pre-copy round whose
 * dirty log saw a write in it (0: none seen, e.g. pure post-copy, which
 * has no rounds) and how many of its pages that round saw written. */
struct mig_push_hint {
	uint64_t nr_chunks;
	const uint32_t *last_round;
	const uint16_t *written;
};

struct mig_policy_ops {
	const char *name;
	unsigned modes; /* the modes it is for: bit (1 << enum mig_mode) */
	/* true: stop iterating now. */
	bool (*should_stop)(const struct mig_params *p, const struct mig_round_stats *cur);
	/* The throttle for the next round, 0..99 (% of time vCPUs are paused). */
	uint32_t (*throttle)(const struct mig_params *p, const struct mig_round_stats *cur);
	/* Post-copy (NULL: the default). push_order fills order[0..nr_chunks)
	 * with every chunk once, the first pushed first (default: guest
	 * order). prefetch: how many pages after a faulted one go with its
	 * answer, those not pushed yet (default 0, at most 63). */
	void (*push_order)(const struct mig_params *p, const struct mig_push_hint *h,
			   uint64_t *order);
	uint32_t (*prefetch)(const struct mig_params *p);
	/* Post-copy: the destination's push gives way to faults every 16
	 * pages instead of every record (up to 64 pages): a shorter fault
	 * tail where CPUs are few, a slower push. */
	bool push_yields;
};

extern const struct mig_policy_ops mig_policy_precopy_default;
extern const struct mig_policy_ops mig_policy_hybrid_default;
extern const struct mig_policy_ops mig_policy_hybrid_recent;
extern const struct mig_policy_ops mig_policy_postcopy_default;
extern const struct mig_policy_ops mig_policy_postcopy_prefetch;
extern const struct mig_policy_ops mig_policy_postcopy_yield;

/* By name ("precopy-default"), or NULL. */
const struct mig_policy_ops *mig_policy_by_name(const char *name);
/* Every policy's name, ", "-separated (for messages). */
const char *mig_policy_names(void);
/* The default for a mode (enum mig_mode). */
const struct mig_policy_ops *mig_policy_for_mode(int mode);

#endif
