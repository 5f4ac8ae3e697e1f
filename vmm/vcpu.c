// SPDX-License-Identifier: MIT
#include "vcpu.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "dirty.h"
#include "hv.h"
#include "vm.h"

/* The kick signal. Its handler does nothing: it only makes a blocking
 * KVM_RUN return -EINTR. */
#define SIG_VCPU_KICK (SIGRTMIN + 1)

/* A request unanswered this long gets a warning and a second kick. */
#define VCPU_ANSWER_WARN_S 5

static void kick_handler(int sig)
{
	(void)sig;
}

static void install_kick_handler(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler;
	sigemptyset(&sa.sa_mask);
	sigaction(SIG_VCPU_KICK, &sa, NULL);
}

void vcpu_signals_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, install_kick_handler);
}

const char *vcpu_state_name(enum vcpu_state s)
{
	static const char *const names[] = {"paused", "running", "exited", "failed"};
	return (unsigned)s < 4 ? names[s] : "?";
}

static void vcpu_kick(struct vcpu *v)
{
	v->vm->hv->vcpu_kick(v->hv);
	if (v->thread_started)
		pthread_kill(v->thread, SIG_VCPU_KICK);
}

void vcpu_mark_exited(struct vcpu *v, uint32_t status)
{
	pthread_mutex_lock(&v->lock);
	if (v->state == VCPU_RUNNING) {
		v->state = VCPU_EXITED;
		v->exit_status = status;
	}
	pthread_mutex_unlock(&v->lock);
	vm_notify(v->vm);
}

void vcpu_mark_failed(struct vcpu *v, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&v->lock);
	va_start(ap, fmt);
	vsnprintf(v->fail_reason, sizeof(v->fail_reason), fmt, ap);
	va_end(ap);
	v->state = VCPU_FAILED;
	pthread_mutex_unlock(&v->lock);
	log_err("vcpu %u: %s", v->index, v->fail_reason);
	vm_notify(v->vm);
}

/* Serves the pending request, if any. Called with v->lock held. */
static void vcpu_serve(struct vcpu *v)
{
	struct vcpu_msg *m = v->msg;
	int r = 0;

	if (!m)
		return;
	/* Before the guest stops or its state is read, finish what the last
	 * exit left half done (KVM completes I/O only on re-entry). */
	if (v->op_pending && v->vm->hv->vcpu_complete) {
		int e = v->vm->hv->vcpu_complete(v->hv);
		if (e)
			log_warn("vcpu %u: completing a pending I/O: %s", v->index, strerror(-e));
		v->op_pending = false;
	}
	switch (m->req) {
	case VCPU_REQ_PAUSE:
		if (v->state == VCPU_RUNNING)
			v->state = VCPU_PAUSED;
		break;
	case VCPU_REQ_RESUME:
		if (v->state == VCPU_PAUSED)
			v->state = VCPU_RUNNING;
		else if (v->state != VCPU_RUNNING)
			r = -EINVAL;
		break;
	case VCPU_REQ_GET_STATE:
		r = v->state == VCPU_RUNNING ? -EBUSY
					     : v->vm->hv->vcpu_get_state(v->hv, m->arg, m->parts);
		break;
	case VCPU_REQ_SET_STATE:
		r = v->state == VCPU_RUNNING ? -EBUSY
					     : v->vm->hv->vcpu_set_state(v->hv, m->arg, m->parts);
		break;
	case VCPU_REQ_STOP:
		v->stopping = true;
		break;
	case VCPU_REQ_NONE:
		break;
	}
	m->result = r;
	m->done = true;
	v->msg = NULL;
	pthread_cond_broadcast(&v->cond);
}

static void vcpu_handle_exit(struct vcpu *v, const struct hv_exit *ex)
{
	switch (ex->reason) {
	case HV_EXIT_IO:
		for (uint32_t i = 0; i < ex->io.count; i++)
			vm_pio(v->vm, v, ex->io.port, ex->io.out, ex->io.size,
			       ex->io.data + (size_t)i * ex->io.size);
		break;
	case HV_EXIT_INTR:
		break;
	case HV_EXIT_DIRTY_FULL: {
		const struct dirty_ops *d = v->vm->dirty;
		int r = d && d->ring_full ? d->ring_full(v->hv) : -ENOTSUP;
		if (r)
			vcpu_mark_failed(v, "dirty ring full and not harvested: %s", strerror(-r));
		break;
	}
	case HV_EXIT_SHUTDOWN:
	case HV_EXIT_HLT:
	case HV_EXIT_MMIO:
	case HV_EXIT_FAIL: {
		struct x86_cpu_state *st = calloc(1, sizeof(*st));
		uint64_t rip = 0;
		if (st && !v->vm->hv->vcpu_get_state(v->hv, st, X86_PART_REGS))
			rip = st->rip;
		free(st);
		if (ex->reason == HV_EXIT_SHUTDOWN)
			vcpu_mark_failed(v, "guest crashed (triple fault) near rip 0x%llx",
					 (unsigned long long)rip);
		else if (ex->reason == HV_EXIT_HLT)
			vcpu_mark_failed(v, "guest halted at rip 0x%llx without an exit status",
					 (unsigned long long)rip);
		else if (ex->reason == HV_EXIT_MMIO)
			vcpu_mark_failed(v, "guest accessed 0x%llx outside RAM at rip 0x%llx",
					 (unsigned long long)ex->mmio_addr,
					 (unsigned long long)rip);
		else
			vcpu_mark_failed(v, "hypervisor failure 0x%llx at rip 0x%llx",
					 (unsigned long long)ex->detail, (unsigned long long)rip);
		break;
	}
	}
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	char name[16];
	struct hv_exit ex;

	snprintf(name, sizeof(name), "vcpu%u", v->index);
	pthread_setname_np(pthread_self(), name);
	pthread_mutex_lock(&v->lock);
	for (;;) {
		vcpu_serve(v);
		if (v->stopping)
			break;
		if (v->state != VCPU_RUNNING) {
			pthread_cond_wait(&v->cond, &v->lock);
			continue;
		}
		pthread_mutex_unlock(&v->lock);
		__atomic_store_n(&v->where, VCPU_IN_GUEST, __ATOMIC_RELAXED);
		int r = v->vm->hv->vcpu_run(v->hv, &ex); /* also completes a pending op */
		__atomic_store_n(&v->where, VCPU_IN_EXIT, __ATOMIC_RELAXED);
		__atomic_add_fetch(&v->nr_exits, 1, __ATOMIC_RELAXED);
		if (r)
			vcpu_mark_failed(v, "entering the guest: %s", strerror(-r));
		else
			vcpu_handle_exit(v, &ex);
		v->op_pending = !r && (ex.reason == HV_EXIT_IO || ex.reason == HV_EXIT_MMIO);
		__atomic_store_n(&v->where, VCPU_IN_MAILBOX, __ATOMIC_RELAXED);
		pthread_mutex_lock(&v->lock);
	}
	pthread_mutex_unlock(&v->lock);
	return NULL;
}

/* Hands m to the vCPU and kicks it; vcpu_answer waits for the answer. */
static void vcpu_post(struct vcpu *v, struct vcpu_msg *m)
{
	pthread_mutex_lock(&v->lock);
	while (v->msg)
		pthread_cond_wait(&v->cond, &v->lock);
	v->msg = m;
	pthread_cond_broadcast(&v->cond);
	vcpu_kick(v);
	pthread_mutex_unlock(&v->lock);
}

static int vcpu_answer(struct vcpu *v, struct vcpu_msg *m)
{
	enum vcpu_req req = m->req;

	pthread_mutex_lock(&v->lock);
	/* The answer may take long only if the vCPU is stuck in the
	 * hypervisor or in a device: say so, and keep waiting (the request
	 * lives on the caller's stack until answered). */
	for (unsigned waited = 0; !m->done;) {
		struct timespec dl;
		clock_gettime(CLOCK_MONOTONIC, &dl);
		dl.tv_sec += VCPU_ANSWER_WARN_S;
		if (pthread_cond_timedwait(&v->cond, &v->lock, &dl) == ETIMEDOUT && !m->done) {
			static const char *const where[] = {"between entries", "in the guest",
							    "handling an exit"};
			waited += VCPU_ANSWER_WARN_S;
			log_warn(
			    "vcpu %u has not answered request %d for %u s (%s, %s, %llu "
			    "exits); kicking again",
			    v->index, req, waited, vcpu_state_name(v->state),
			    where[__atomic_load_n(&v->where, __ATOMIC_RELAXED) % 3],
			    (unsigned long long)__atomic_load_n(&v->nr_exits, __ATOMIC_RELAXED));
			vcpu_kick(v);
		}
	}
	pthread_mutex_unlock(&v->lock);
	return m->result;
}

static int vcpu_call(struct vcpu *v, enum vcpu_req req, void *arg, unsigned parts)
{
	struct vcpu_msg m = {.req = req, .arg = arg, .parts = parts};

	if (!v->thread_started)
		return -ESRCH;
	vcpu_post(v, &m);
	return vcpu_answer(v, &m);
}

int vcpus_call_all(struct vcpu **v, unsigned n, enum vcpu_req req, bool only_paused,
		   struct x86_cpu_state *st, unsigned parts)
{
	struct vcpu_msg m[VCPU_MAX_BATCH];
	bool posted[VCPU_MAX_BATCH] = {false};
	int first = 0;

	if (n > VCPU_MAX_BATCH)
		return -E2BIG;
	/* Every vCPU gets its request before any answer is awaited: they
	 * stop (or start, or save their state) together, not one scheduling
	 * delay after another. */
	for (unsigned i = 0; i < n; i++) {
		if (!v[i]->thread_started) {
			first = first ? first : -ESRCH;
			continue;
		}
		if (only_paused && vcpu_get_run_state(v[i]) != VCPU_PAUSED)
			continue;
		m[i] = (struct vcpu_msg){.req = req, .arg = st ? &st[i] : NULL, .parts = parts};
		vcpu_post(v[i], &m[i]);
		posted[i] = true;
	}
	for (unsigned i = 0; i < n; i++) {
		int r = posted[i] ? vcpu_answer(v[i], &m[i]) : 0;
		if (r && !first)
			first = r;
	}
	return first;
}

int vcpu_pause(struct vcpu *v)
{
	return vcpu_call(v, VCPU_REQ_PAUSE, NULL, 0);
}

int vcpu_resume(struct vcpu *v)
{
	return vcpu_call(v, VCPU_REQ_RESUME, NULL, 0);
}

int vcpu_get_state(struct vcpu *v, struct x86_cpu_state *st, unsigned parts)
{
	return vcpu_call(v, VCPU_REQ_GET_STATE, st, parts);
}

int vcpu_set_state(struct vcpu *v, const struct x86_cpu_state *st, unsigned parts)
{
	return vcpu_call(v, VCPU_REQ_SET_STATE, (void *)st, parts);
}

enum vcpu_state vcpu_get_run_state(struct vcpu *v)
{
	pthread_mutex_lock(&v->lock);
	enum vcpu_state s = v->state;
	pthread_mutex_unlock(&v->lock);
	return s;
}

int vcpu_create(struct vm *vm, uint32_t index, struct vcpu **out)
{
	struct vcpu *v = calloc(1, sizeof(*v));
	int r;

	if (!v)
		return -ENOMEM;
	v->vm = vm;
	v->index = index;
	v->state = VCPU_PAUSED;
	pthread_mutex_init(&v->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&v->cond, &ca);
	pthread_condattr_destroy(&ca);
	r = vm->hv->vcpu_create(vm->hv_vm, index, &v->hv);
	if (r)
		goto fail;
	vcpu_signals_init();
	r = -pthread_create(&v->thread, NULL, vcpu_thread, v);
	if (r) {
		log_err("starting vcpu %u thread: %s", index, strerror(-r));
		goto fail;
	}
	v->thread_started = true;
	*out = v;
	return 0;
fail:
	vcpu_destroy(v);
	return r;
}

void vcpu_destroy(struct vcpu *v)
{
	if (!v)
		return;
	if (v->thread_started) {
		vcpu_call(v, VCPU_REQ_STOP, NULL, 0);
		pthread_join(v->thread, NULL);
	}
	if (v->hv)
		v->vm->hv->vcpu_destroy(v->hv);
	pthread_cond_destroy(&v->cond);
	pthread_mutex_destroy(&v->lock);
	free(v);
}
