/* SPDX-License-Identifier: MIT */
/*
 * The Flit test device (ports in guests/abi.h): how a test guest reports its
 * exit status, progress, checkpoints and verification results, and how the
 * VMM sends it commands. Per-vCPU slots; the VM owner reads them.
 */
#ifndef FLIT_VMM_DEV_TESTDEV_H
#define FLIT_VMM_DEV_TESTDEV_H

#include <pthread.h>
#include <stdint.h>

#include "dev.h"
#include "guests/abi.h"

struct testdev_slot {
	uint32_t time_hi;     /* latched by a TIME_LO read */
	uint32_t exc[3];      /* exception vector, error code, rip low */
	uint32_t progress;    /* last PROGRESS value */
	uint32_t command;     /* pending FLIT_CMD_*, 0 if none */
	uint32_t reports;     /* REPORT_BAD writes so far */
	uint32_t last_bad;    /* value of the last one */
	uint64_t checkpoints; /* CHECKPOINT writes so far */
};

/* Plain state, saved and restored as is (pending commands and counters). */
struct testdev_state {
	struct testdev_slot slot[FLIT_MAX_VCPUS];
};

/* Runs on the vCPU thread that wrote CHECKPOINT, before the guest goes on.
 * It may collect dirty logs or read and write guest memory; it must not
 * pause, resume or query vCPUs of this VM (they may be waiting on it). */
typedef void (*testdev_checkpoint_fn)(void *opaque, struct vcpu *vcpu, uint32_t id);

struct testdev {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct testdev_state st; /* protected by lock */
	testdev_checkpoint_fn checkpoint;
	void *checkpoint_opaque;
};

extern const struct dev_ops testdev_ops;

void testdev_init(struct testdev *t);
void testdev_destroy(struct testdev *t);

/* Queue a command for one vCPU, or for all (vcpu = -1). */
void testdev_command(struct testdev *t, int vcpu, uint32_t cmd);

/* Wait until each of the first nr_vcpus vCPUs has made at least 'reports'
 * REPORT_BAD writes; sum of their last values in *bad. -ETIMEDOUT after
 * timeout_ms (< 0: no limit). */
int testdev_wait_reports(struct testdev *t, unsigned nr_vcpus, uint32_t reports, int timeout_ms,
			 uint64_t *bad);

/* Wait until every one of the first nr_vcpus vCPUs has reported progress of
 * at least 'progress'. -ETIMEDOUT after timeout_ms (< 0: no limit). */
int testdev_wait_progress(struct testdev *t, unsigned nr_vcpus, uint32_t progress, int timeout_ms);

struct testdev_slot testdev_slot(struct testdev *t, unsigned vcpu);

#endif
