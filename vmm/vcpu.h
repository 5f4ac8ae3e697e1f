/* SPDX-License-Identifier: MIT */
/*
 * vCPU threads. Each vCPU runs on its own thread, controlled only through
 * its mailbox: a request (pause, resume, get state, set state, stop) is
 * posted under the vCPU's lock, the thread is kicked out of the guest (the
 * backend's kick plus an empty signal handler; no lock is ever taken in a
 * signal handler), the thread serves the request between two guest entries
 * and answers. Callers block until the answer.
 *
 * States: a vCPU starts PAUSED; RUNNING while it may enter the guest;
 * EXITED once the guest wrote its exit status; FAILED on a fatal exit (triple
 * fault, internal error). EXITED and FAILED vCPUs still serve requests
 * (their state can be read) until stopped.
 */
#ifndef FLIT_VMM_VCPU_H
#define FLIT_VMM_VCPU_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "arch/x86/cpu_state.h"

struct vm;
struct hv_vcpu;

enum vcpu_state { VCPU_PAUSED, VCPU_RUNNING, VCPU_EXITED, VCPU_FAILED };

enum vcpu_where { VCPU_IN_MAILBOX, VCPU_IN_GUEST, VCPU_IN_EXIT };

enum vcpu_req {
	VCPU_REQ_NONE,
	VCPU_REQ_PAUSE,
	VCPU_REQ_RESUME,
	VCPU_REQ_GET_STATE,
	VCPU_REQ_SET_STATE,
	VCPU_REQ_STOP
};

struct vcpu_msg {
	enum vcpu_req req;
	void *arg;
	unsigned parts;
	int result;
	bool done;
};

struct vcpu {
	struct vm *vm;
	uint32_t index;
	struct hv_vcpu *hv;
	pthread_t thread;
	bool thread_started;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* mailbox, protected by lock: the request being served, which lives
	 * on its caller's stack until answered; NULL when free */
	struct vcpu_msg *msg;
	bool stopping;
	/* protected by lock */
	enum vcpu_state state;
	uint32_t exit_status;
	char fail_reason[160];

	/* written by the vCPU thread, read by anyone (atomics): where the
	 * thread is, for the diagnostics of a request left unanswered */
	int where;	 /* enum vcpu_where */
	bool op_pending; /* owner thread: the last exit left an I/O to complete */
	uint64_t nr_exits;
};

/* Creates the backend vCPU and its thread, PAUSED. */
int vcpu_create(struct vm *vm, uint32_t index, struct vcpu **out);
/* Stops the thread and frees everything; tolerates a half-built vCPU. */
void vcpu_destroy(struct vcpu *v);

/* Blocking requests; any thread but the vCPU's own. 0 or -errno. */
int vcpu_pause(struct vcpu *v);
/* The same request to n vCPUs at once, then every answer; only_paused:
 * skip vCPUs that are not paused; st: state requests, st[i] for v[i]. The
 * first error. */
#define VCPU_MAX_BATCH 64
int vcpus_call_all(struct vcpu **v, unsigned n, enum vcpu_req req, bool only_paused,
		   struct x86_cpu_state *st, unsigned parts);
int vcpu_resume(struct vcpu *v);
/* The vCPU must be paused, exited or failed: -EBUSY if running. */
int vcpu_get_state(struct vcpu *v, struct x86_cpu_state *st, unsigned parts);
int vcpu_set_state(struct vcpu *v, const struct x86_cpu_state *st, unsigned parts);

enum vcpu_state vcpu_get_run_state(struct vcpu *v);

/* From the vCPU's own thread (devices): the guest has exited / failed. */
void vcpu_mark_exited(struct vcpu *v, uint32_t status);
void vcpu_mark_failed(struct vcpu *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Installs the kick signal's empty handler; once per process, before any
 * vCPU thread starts. Idempotent. */
void vcpu_signals_init(void);

const char *vcpu_state_name(enum vcpu_state s);

#endif
