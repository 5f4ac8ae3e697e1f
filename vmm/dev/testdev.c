// SPDX-License-Identifier: MIT
#include "testdev.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "vmm/vcpu.h"

void testdev_init(struct testdev *t)
{
	pthread_condattr_t ca;

	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cond, &ca);
	pthread_condattr_destroy(&ca);
}

void testdev_destroy(struct testdev *t)
{
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->lock);
}

static void testdev_pio(void *dev, struct vcpu *vcpu, uint16_t off, bool out, uint8_t size,
			uint8_t *data)
{
	struct testdev *t = dev;
	struct testdev_slot *s;
	uint32_t v = 0;

	if (size != 4 || vcpu->index >= FLIT_MAX_VCPUS) {
		if (!out)
			memset(data, 0xff, size);
		return;
	}
	memcpy(&v, data, 4);
	s = &t->st.slot[vcpu->index];
	if (!out) {
		pthread_mutex_lock(&t->lock);
		v = off == FLIT_TD_COMMAND ? s->command : 0;
		if (off == FLIT_TD_COMMAND)
			s->command = FLIT_CMD_NONE;
		if (off == FLIT_TD_TIME_LO) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			uint64_t us =
			    (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000;
			v = (uint32_t)us;
			s->time_hi = (uint32_t)(us >> 32);
		}
		if (off == FLIT_TD_TIME_HI)
			v = s->time_hi;
		pthread_mutex_unlock(&t->lock);
		memcpy(data, &v, 4);
		return;
	}
	switch (off) {
	case FLIT_TD_EXIT:
		vcpu_mark_exited(vcpu, v);
		break;
	case FLIT_TD_CHECKPOINT:
		pthread_mutex_lock(&t->lock);
		s->checkpoints++;
		pthread_cond_broadcast(&t->cond);
		pthread_mutex_unlock(&t->lock);
		if (t->checkpoint)
			t->checkpoint(t->checkpoint_opaque, vcpu, v);
		break;
	case FLIT_TD_EXC_VECTOR:
	case FLIT_TD_EXC_VECTOR + 4:
	case FLIT_TD_EXC_VECTOR + 8:
		s->exc[(off - FLIT_TD_EXC_VECTOR) / 4] = v;
		break;
	case FLIT_TD_EXC_RIP_HI: {
		static const char *const names[32] = {
		    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "?",	  "#TS",
		    "#NP", "#SS", "#GP", "#PF", "?",   "#MF", "#AC", "#MC", "#XM", "#VE", "#CP"};
		uint32_t vec = s->exc[0] % 32;
		vcpu_mark_failed(vcpu,
				 "guest exception %s (vector %u, error code 0x%x) at rip 0x%llx",
				 names[vec] ? names[vec] : "?", s->exc[0], s->exc[1],
				 (unsigned long long)((uint64_t)v << 32 | s->exc[2]));
		break;
	}
	case FLIT_TD_SLEEP: {
		/* Like HLT: a kick (pause, state request) cuts it short. */
		uint32_t us = v > FLIT_SLEEP_MAX_US ? FLIT_SLEEP_MAX_US : v;
		struct timespec ts = {.tv_sec = us / 1000000,
				      .tv_nsec = (long)(us % 1000000) * 1000};
		nanosleep(&ts, NULL);
		break;
	}
	case FLIT_TD_PROGRESS:
	case FLIT_TD_REPORT_BAD:
		pthread_mutex_lock(&t->lock);
		if (off == FLIT_TD_PROGRESS) {
			s->progress = v;
		} else {
			s->last_bad = v;
			s->reports++;
		}
		pthread_cond_broadcast(&t->cond);
		pthread_mutex_unlock(&t->lock);
		break;
	default:
		break;
	}
}

void testdev_command(struct testdev *t, int vcpu, uint32_t cmd)
{
	pthread_mutex_lock(&t->lock);
	for (int i = 0; i < FLIT_MAX_VCPUS; i++)
		if (vcpu < 0 || vcpu == i)
			t->st.slot[i].command = cmd;
	pthread_mutex_unlock(&t->lock);
}

struct testdev_slot testdev_slot(struct testdev *t, unsigned vcpu)
{
	struct testdev_slot s = {0};

	if (vcpu >= FLIT_MAX_VCPUS)
		return s;
	pthread_mutex_lock(&t->lock);
	s = t->st.slot[vcpu];
	pthread_mutex_unlock(&t->lock);
	return s;
}

static int wait_until(struct testdev *t, const struct timespec *deadline)
{
	if (!deadline)
		return pthread_cond_wait(&t->cond, &t->lock);
	return pthread_cond_timedwait(&t->cond, &t->lock, deadline);
}

static struct timespec *deadline_in(struct timespec *ts, int timeout_ms)
{
	if (timeout_ms < 0)
		return NULL;
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += timeout_ms / 1000;
	ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
	return ts;
}

int testdev_wait_reports(struct testdev *t, unsigned nr_vcpus, uint32_t reports, int timeout_ms,
			 uint64_t *bad)
{
	struct timespec ts, *dl = deadline_in(&ts, timeout_ms);
	int r = 0;

	pthread_mutex_lock(&t->lock);
	for (;;) {
		unsigned i;
		uint64_t sum = 0;
		for (i = 0; i < nr_vcpus && i < FLIT_MAX_VCPUS; i++) {
			if (t->st.slot[i].reports < reports)
				break;
			sum += t->st.slot[i].last_bad;
		}
		if (i == nr_vcpus) {
			*bad = sum;
			break;
		}
		if (wait_until(t, dl) == ETIMEDOUT) {
			r = -ETIMEDOUT;
			break;
		}
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

int testdev_wait_progress(struct testdev *t, unsigned nr_vcpus, uint32_t progress, int timeout_ms)
{
	struct timespec ts, *dl = deadline_in(&ts, timeout_ms);
	int r = 0;

	pthread_mutex_lock(&t->lock);
	for (;;) {
		unsigned i;
		for (i = 0; i < nr_vcpus && i < FLIT_MAX_VCPUS; i++)
			if (t->st.slot[i].progress < progress)
				break;
		if (i == nr_vcpus)
			break;
		if (wait_until(t, dl) == ETIMEDOUT) {
			r = -ETIMEDOUT;
			break;
		}
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

static void testdev_save(void *dev, void *state)
{
	struct testdev *t = dev;

	pthread_mutex_lock(&t->lock);
	memcpy(state, &t->st, sizeof(t->st));
	pthread_mutex_unlock(&t->lock);
}

static int testdev_restore(void *dev, const void *state)
{
	struct testdev *t = dev;
	struct testdev_state st;

	memcpy(&st, state, sizeof(st));
	for (unsigned i = 0; i < FLIT_MAX_VCPUS; i++)
		if (st.slot[i].command > FLIT_CMD_EXIT)
			return -EINVAL;
	pthread_mutex_lock(&t->lock);
	t->st = st;
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
	return 0;
}

const struct dev_ops testdev_ops = {
    .name = "testdev",
    .port = FLIT_TESTDEV_PORT,
    .nr_ports = FLIT_TESTDEV_SIZE,
    .pio = testdev_pio,
    .state_size = sizeof(struct testdev_state),
    .save = testdev_save,
    .restore = testdev_restore,
};
