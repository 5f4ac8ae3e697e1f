// SPDX-License-Identifier: MIT
#include "api.h"

#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/util.h"
#include "migrate/conn.h"
#include "migrate/policy.h"
#include "transport/transport.h"
#include "vmm/remote.h"
#include "vmm/vm.h"

#define REQ_MAX 4096

enum mig_state { MIG_NONE, MIG_ACTIVE, MIG_ENDED };

struct api_server {
	char path[108];
	int lfd, stop_fd;
	pthread_t thread;
	struct vm *vm;
	struct mig_params defaults;

	pthread_mutex_t lock;
	/* protected by lock */
	enum mig_state mig;
	struct mig_params mp;
	struct mig_report rep;
	int mig_r;
	bool migrated, quit;
	bool lost;	 /* post-copy broke after the switch: no copy here to run */
	bool final_read; /* a client got the ended migration's status */
	pthread_t mig_thread;
	bool mig_thread_started;
	/* atomics */
	struct mig_progress progress;
	volatile int cancel;
	volatile int postcopy_now;
	volatile int recover_now;
	char recover_addr[300]; /* written before recover_now is set */
};

static void *mig_thread(void *arg)
{
	struct api_server *s = arg;
	struct mig_report rep;
	thread_name("mig-source");
	int r = mig_source_run(s->vm, &s->mp, &rep);

	pthread_mutex_lock(&s->lock);
	s->rep = rep;
	s->mig_r = r;
	s->mig = MIG_ENDED;
	s->migrated = r == 0;
	s->lost = r && (!strcmp(rep.status, "lost") || !strcmp(rep.status, "unconfirmed"));
	pthread_mutex_unlock(&s->lock);
	if (r)
		log_err("migration %s: %s", rep.status, rep.error);
	else
		log_info("migration completed: %.1f ms total, %.2f ms downtime", rep.total_ms,
			 rep.downtime_ms);
	vm_notify(s->vm); /* wake the main thread's wait */
	return NULL;
}

static json_object *error_reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_object *error_reply(const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	json_object *o = json_object_new_object();

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "error", json_object_new_string(msg));
	return o;
}

static json_object *ok_reply(void)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "ok", json_object_new_boolean(1));
	return o;
}

/* Guest RAM in memsvc: where it is and how the cache does. */
static json_object *remote_json(struct remote_mem *rm)
{
	struct pager_stats ps;
	json_object *o = json_object_new_object();

	remote_stats(rm, &ps);
	json_object_object_add(o, "url", json_object_new_string(remote_url(rm)));
	json_object_object_add(o, "epoch", json_object_new_int64((int64_t)remote_epoch(rm)));
#define N(k, v) json_object_object_add(o, k, json_object_new_int64((int64_t)(v)))
	N("resident_pages", ps.resident);
	N("dirty_pages", remote_dirty(rm));
	N("fetched_pages", ps.fetched);
	N("evicted_pages", ps.evicted);
	N("written_back_pages", ps.written);
	N("first_writes", ps.wp_faults);
	N("reconnects", ps.reconnects);
	N("fault_p50_us", ps.fetch_p50_us);
	N("fault_p99_us", ps.fetch_p99_us);
#undef N
	return o;
}

static const char *vm_state(struct api_server *s)
{
	if (s->migrated)
		return "migrated";
	if (s->lost)
		return "lost";
	enum vcpu_state st = vcpu_get_run_state(s->vm->vcpus[0]);
	for (uint32_t i = 0; i < s->vm->nr_vcpus; i++) {
		enum vcpu_state v = vcpu_get_run_state(s->vm->vcpus[i]);
		if (v == VCPU_FAILED)
			return "failed";
		if (v == VCPU_RUNNING)
			st = VCPU_RUNNING;
	}
	return vcpu_state_name(st);
}

/* Optional members of a request, type-checked. */
static int get_uint(json_object *req, const char *key, uint64_t min, uint64_t max, uint64_t *out,
		    char *why, size_t len)
{
	json_object *v;

	if (!json_object_object_get_ex(req, key, &v))
		return 0;
	if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < (int64_t)min ||
	    (uint64_t)json_object_get_int64(v) > max) {
		snprintf(why, len, "'%s' must be an integer from %llu to %llu", key,
			 (unsigned long long)min, (unsigned long long)max);
		return -EINVAL;
	}
	*out = (uint64_t)json_object_get_int64(v);
	return 0;
}

static json_object *do_migrate(struct api_server *s, json_object *req)
{
	struct mig_params p = s->defaults;
	json_object *v;
	char why[200] = "", host[256];
	uint16_t port;
	uint64_t n;
	bool mode_given = false;

	if (!json_object_object_get_ex(req, "target", &v) ||
	    !json_object_is_type(v, json_type_string))
		return error_reply("migrate needs \"target\": \"tcp:HOST:PORT\"");
	const char *target = json_object_get_string(v);
	if (mig_parse_addr(target, host, sizeof(host), &port))
		return error_reply("target %s: an address is tcp:HOST:PORT", target);
	if (!p.token_len)
		return error_reply("no migration token: start flit with --token-file");
	n = p.channels;
	if (get_uint(req, "channels", 1, MIG_MAX_CHANNELS, &n, why, sizeof(why)))
		return error_reply("%s", why);
	p.channels = (unsigned)n;
	n = p.downtime_limit_ms;
	if (get_uint(req, "downtime_limit_ms", 1, 60000, &n, why, sizeof(why)))
		return error_reply("%s", why);
	p.downtime_limit_ms = (uint32_t)n;
	n = p.max_rounds;
	if (get_uint(req, "max_rounds", 1, 10000, &n, why, sizeof(why)))
		return error_reply("%s", why);
	p.max_rounds = (uint32_t)n;
	n = p.bandwidth_limit;
	if (get_uint(req, "bandwidth", 0, UINT64_MAX / 2, &n, why, sizeof(why)))
		return error_reply("%s", why);
	p.bandwidth_limit = n;
	if (json_object_object_get_ex(req, "auto_converge", &v)) {
		if (!json_object_is_type(v, json_type_boolean))
			return error_reply("'auto_converge' must be true or false");
		p.auto_converge = json_object_get_boolean(v);
	}
	if (json_object_object_get_ex(req, "mode", &v)) {
		int m = json_object_is_type(v, json_type_string)
			    ? mig_mode_parse(json_object_get_string(v))
			    : -1;
		if (m < 0)
			return error_reply("'mode' must be \"precopy\", \"postcopy\", \"hybrid\" "
					   "or \"memsvc\"");
		p.mode = (enum mig_mode)m;
		mode_given = true;
	}
	if (json_object_object_get_ex(req, "policy", &v)) {
		p.policy = json_object_is_type(v, json_type_string)
			       ? mig_policy_by_name(json_object_get_string(v))
			       : NULL;
		if (!p.policy)
			return error_reply("'policy' must be one of %s", mig_policy_names());
		/* A policy made for one mode implies it. */
		if (!mode_given && !(p.policy->modes & (p.policy->modes - 1)))
			p.mode = (enum mig_mode)__builtin_ctz(p.policy->modes);
	}
	if (p.policy && !(p.policy->modes & 1u << p.mode))
		return error_reply("policy %s is not for mode %s", p.policy->name,
				   mig_mode_name(p.mode));
	if (json_object_object_get_ex(req, "memsvc_cache", &v)) {
		int how = json_object_is_type(v, json_type_string)
			      ? mig_memsvc_cache_parse(json_object_get_string(v))
			      : -1;
		if (how < 0)
			return error_reply("'memsvc_cache' must be \"send\" or \"writeback\"");
		p.memsvc_cache = (enum mig_memsvc_cache)how;
	}
	if ((p.mode == MIG_MODE_MEMSVC) != !!p.remote)
		return error_reply(p.remote ? "this guest's RAM is in memsvc: 'mode' must be "
					      "\"memsvc\""
					    : "'mode' \"memsvc\" needs guest RAM in memsvc");
	if (json_object_object_get_ex(req, "checksum_pages", &v)) {
		if (!json_object_is_type(v, json_type_boolean))
			return error_reply("'checksum_pages' must be true or false");
		p.checksum_pages = json_object_get_boolean(v);
	}
	if (json_object_object_get_ex(req, "transport", &v)) {
		if (!json_object_is_type(v, json_type_string) ||
		    !(p.transport = transport_find(json_object_get_string(v))))
			return error_reply("'transport' must be one of %s", transport_names());
	}
	pthread_mutex_lock(&s->lock);
	if (s->mig == MIG_ACTIVE || s->migrated) {
		pthread_mutex_unlock(&s->lock);
		return error_reply("%s", s->migrated ? "the guest has already migrated away"
						     : "a migration is already running");
	}
	if (s->mig_thread_started) {
		pthread_join(s->mig_thread, NULL);
		s->mig_thread_started = false;
	}
	/* The address must outlive the request: keep a copy. */
	static __thread char addr[300];
	snprintf(addr, sizeof(addr), "%s", target);
	p.addr = addr;
	s->cancel = 0;
	s->postcopy_now = 0;
	memset(&s->progress, 0, sizeof(s->progress));
	p.cancel = &s->cancel;
	p.postcopy_now = &s->postcopy_now;
	s->recover_now = 0;
	s->recover_addr[0] = 0;
	p.recover_now = &s->recover_now;
	p.recover_addr = s->recover_addr;
	p.progress = &s->progress;
	s->mp = p;
	memset(&s->rep, 0, sizeof(s->rep));
	s->mig = MIG_ACTIVE;
	s->final_read = false;
	int r = -pthread_create(&s->mig_thread, NULL, mig_thread, s);
	if (r) {
		s->mig = MIG_NONE;
		pthread_mutex_unlock(&s->lock);
		return error_reply("starting the migration: %s", strerror(-r));
	}
	s->mig_thread_started = true;
	pthread_mutex_unlock(&s->lock);
	log_info("migrating to %s (%u channels), requested through the API", target, p.channels);
	return ok_reply();
}

static json_object *do_migrate_status(struct api_server *s)
{
	static const char *const phases[] = {"none",	 "setup", "iterate",	    "stop-and-copy",
					     "postcopy", "done",  "postcopy-paused"};
	json_object *o = ok_reply();
	struct mig_progress pg;

	pthread_mutex_lock(&s->lock);
	enum mig_state m = s->mig;
	const char *status = m == MIG_NONE ? "none" : m == MIG_ACTIVE ? "active" : s->rep.status;
	json_object_object_add(o, "status", json_object_new_string(status));
	if (m == MIG_ENDED) {
		json_object_object_add(o, "report", mig_report_to_json(&s->rep));
		s->final_read = true;
	}
	pthread_mutex_unlock(&s->lock);
	pg.phase = __atomic_load_n(&s->progress.phase, __ATOMIC_RELAXED);
	pg.round = __atomic_load_n(&s->progress.round, __ATOMIC_RELAXED);
	pg.pages_sent = __atomic_load_n(&s->progress.pages_sent, __ATOMIC_RELAXED);
	pg.bytes = __atomic_load_n(&s->progress.bytes, __ATOMIC_RELAXED);
	pg.dirty_pages = __atomic_load_n(&s->progress.dirty_pages, __ATOMIC_RELAXED);
	pg.dirty_rate_pps = __atomic_load_n(&s->progress.dirty_rate_pps, __ATOMIC_RELAXED);
	pg.est_downtime_us = __atomic_load_n(&s->progress.est_downtime_us, __ATOMIC_RELAXED);
	pg.bandwidth_bps = __atomic_load_n(&s->progress.bandwidth_bps, __ATOMIC_RELAXED);
	pg.throttle_pct = __atomic_load_n(&s->progress.throttle_pct, __ATOMIC_RELAXED);
	json_object_object_add(o, "phase",
			       json_object_new_string(phases[pg.phase % ARRAY_SIZE(phases)]));
	json_object_object_add(o, "round", json_object_new_int64(pg.round));
	json_object_object_add(o, "pages_sent", json_object_new_int64((int64_t)pg.pages_sent));
	json_object_object_add(o, "bytes", json_object_new_int64((int64_t)pg.bytes));
	json_object_object_add(o, "dirty_pages", json_object_new_int64((int64_t)pg.dirty_pages));
	json_object_object_add(o, "dirty_rate_pps",
			       json_object_new_int64((int64_t)pg.dirty_rate_pps));
	json_object_object_add(o, "est_downtime_ms",
			       json_object_new_double((double)pg.est_downtime_us / 1e3));
	json_object_object_add(o, "bandwidth_mbps",
			       json_object_new_double((double)pg.bandwidth_bps * 8 / 1e6));
	json_object_object_add(o, "throttle_pct", json_object_new_int64(pg.throttle_pct));
	json_object_object_add(o, "mem_bytes", json_object_new_int64((int64_t)s->vm->mem.size));
	return o;
}

/* A post-copy whose connection broke tries again now, at "target" if
 * given. Refused unless it waits for exactly that. */
static json_object *do_migrate_recover(struct api_server *s, json_object *req, bool busy)
{
	json_object *v;
	char host[256];
	uint16_t port;
	const char *target = "";

	if (json_object_object_get_ex(req, "target", &v)) {
		target = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
		if (mig_parse_addr(target, host, sizeof(host), &port) ||
		    strlen(target) >= sizeof(s->recover_addr))
			return error_reply("target %s: an address is tcp:HOST:PORT", target);
	}
	if (!busy ||
	    __atomic_load_n(&s->progress.phase, __ATOMIC_RELAXED) != MIG_PHASE_POSTCOPY_PAUSED)
		return error_reply("no post-copy is waiting to recover (migrate-status says "
				   "phase postcopy-paused when one is)");
	/* Read by the migration thread only after it sees recover_now. */
	if (target[0])
		snprintf(s->recover_addr, sizeof(s->recover_addr), "%s", target);
	__atomic_store_n(&s->recover_now, 1, __ATOMIC_RELEASE);
	return ok_reply();
}

/* One request line; *subscribe is set if it asks for the event stream. */
static json_object *handle(struct api_server *s, const char *line, bool *subscribe)
{
	json_object *req = json_tokener_parse(line), *v, *reply;
	const char *cmd;

	if (!req || !json_object_is_type(req, json_type_object)) {
		json_object_put(req);
		return error_reply("not a JSON object");
	}
	if (!json_object_object_get_ex(req, "cmd", &v) ||
	    !json_object_is_type(v, json_type_string)) {
		json_object_put(req);
		return error_reply("no \"cmd\" string");
	}
	cmd = json_object_get_string(v);
	pthread_mutex_lock(&s->lock);
	bool busy = s->mig == MIG_ACTIVE, gone = s->migrated;
	pthread_mutex_unlock(&s->lock);
	if (!strcmp(cmd, "status")) {
		reply = ok_reply();
		json_object_object_add(reply, "state", json_object_new_string(vm_state(s)));
		json_object_object_add(reply, "mem_bytes",
				       json_object_new_int64((int64_t)s->vm->mem.size));
		json_object_object_add(reply, "vcpus", json_object_new_int64(s->vm->nr_vcpus));
		json_object_object_add(reply, "migrating", json_object_new_boolean(busy));
		if (s->defaults.remote && !gone)
			json_object_object_add(reply, "remote_memory",
					       remote_json(s->defaults.remote));
	} else if (!strcmp(cmd, "pause") || !strcmp(cmd, "resume")) {
		if (busy || gone)
			reply = error_reply("%s", busy ? "a migration owns the VM now"
						       : "the guest has migrated away");
		else {
			int r = cmd[0] == 'p' ? vm_pause(s->vm) : vm_resume(s->vm);
			reply = r ? error_reply("%s: %s", cmd, strerror(-r)) : ok_reply();
		}
	} else if (!strcmp(cmd, "migrate")) {
		reply = do_migrate(s, req);
	} else if (!strcmp(cmd, "migrate-status")) {
		reply = do_migrate_status(s);
	} else if (!strcmp(cmd, "migrate-cancel")) {
		if (!busy)
			reply = error_reply("no migration is running");
		else {
			__atomic_store_n(&s->cancel, 1, __ATOMIC_RELAXED);
			reply = ok_reply();
		}
	} else if (!strcmp(cmd, "migrate-postcopy")) {
		uint32_t phase = __atomic_load_n(&s->progress.phase, __ATOMIC_RELAXED);
		if (!busy)
			reply = error_reply("no migration is running");
		else if (s->mp.mode == MIG_MODE_POSTCOPY || phase > MIG_PHASE_ITERATE)
			reply = error_reply("the migration is past its pre-copy rounds");
		else {
			__atomic_store_n(&s->postcopy_now, 1, __ATOMIC_RELAXED);
			reply = ok_reply();
		}
	} else if (!strcmp(cmd, "migrate-recover")) {
		reply = do_migrate_recover(s, req, busy);
	} else if (!strcmp(cmd, "subscribe")) {
		*subscribe = true;
		reply = ok_reply();
	} else if (!strcmp(cmd, "quit")) {
		pthread_mutex_lock(&s->lock);
		s->quit = true;
		pthread_mutex_unlock(&s->lock);
		__atomic_store_n(&s->cancel, 1, __ATOMIC_RELAXED);
		vm_notify(s->vm);
		reply = ok_reply();
	} else {
		reply = error_reply(
		    "unknown command '%.40s' (status, pause, resume, migrate, "
		    "migrate-status, migrate-cancel, migrate-postcopy, migrate-recover, "
		    "subscribe, quit)",
		    cmd);
	}
	json_object_put(req);
	return reply;
}

/*
 * Serving: one io_uring loop on the API thread (common/loop.h). Ops: a poll
 * on the listening socket (accepts, re-armed), a read of the stop eventfd,
 * a 200 ms timer for the event stream, and a recv per client. Replies and
 * events are small and go out with a non-blocking send; a client that does
 * not read them (its socket buffer full) is dropped.
 */
struct client {
	struct loop_op op; /* first: the recv's CQE finds the client */
	struct api_server *s;
	int fd;
	bool events; /* subscribed to the event stream */
	bool dead;
	size_t len;
	char buf[REQ_MAX + 1];
	struct client *next;
};

struct serve {
	struct api_server *s;
	struct loop loop;
	struct loop_op accept_op, stop_op, tick_op;
	struct __kernel_timespec tick;
	uint64_t stop_val;
	struct client *clients;
	/* what the event stream last told */
	const char *last_state;
	enum mig_state last_mig;
};

static bool send_line(struct client *c, json_object *o)
{
	const char *t = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							      JSON_C_TO_STRING_NOSLASHESCAPE);
	size_t n = strlen(t);
	struct iovec iov[2] = {{(void *)t, n}, {(void *)"\n", 1}};
	struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};

	if (c->dead)
		return false;
	if (sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)(n + 1))
		c->dead = true; /* gone, or not reading what it asked for */
	return !c->dead;
}

static void client_recv(struct serve *sv, struct client *c)
{
	struct io_uring_sqe *sqe = loop_sqe(&sv->loop, &c->op);

	if (!sqe) {
		c->dead = true;
		return;
	}
	io_uring_prep_recv(sqe, c->fd, c->buf + c->len, REQ_MAX - c->len, 0);
}

static void on_client(struct loop *l, struct loop_op *op, const struct io_uring_cqe *cqe)
{
	struct client *c = (struct client *)op;
	struct serve *sv = (struct serve *)l->opaque;
	char *nl;

	if (cqe->res <= 0 || c->dead) {
		c->dead = true;
		return;
	}
	c->len += (size_t)cqe->res;
	while (!c->dead && (nl = memchr(c->buf, '\n', c->len))) {
		*nl = 0;
		json_object *reply = handle(c->s, c->buf, &c->events);
		send_line(c, reply);
		json_object_put(reply);
		c->len -= (size_t)(nl + 1 - c->buf);
		memmove(c->buf, nl + 1, c->len);
	}
	if (c->len == REQ_MAX) {
		json_object *e = error_reply("request too long");
		send_line(c, e);
		json_object_put(e);
		c->dead = true;
	}
	if (!c->dead)
		client_recv(sv, c);
}

static void on_accept(struct loop *l, struct loop_op *op, const struct io_uring_cqe *cqe)
{
	struct serve *sv = (struct serve *)l->opaque;

	(void)op;
	/* The listening socket is non-blocking (accept until EAGAIN); a
	 * client's is not: io_uring's recv then waits for data itself, where
	 * on an O_NONBLOCK socket it would fail with EAGAIN. */
	for (;;) {
		int fd = accept4(sv->s->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			break;
		struct client *c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			break;
		}
		*c = (struct client){.op.cb = on_client, .s = sv->s, .fd = fd, .next = sv->clients};
		sv->clients = c;
		client_recv(sv, c);
	}
	if (cqe->res >= 0)
		loop_poll(l, &sv->accept_op, sv->s->lfd, POLLIN);
	else if (cqe->res != -ECANCELED)
		log_warn("API socket: %s", strerror(-cqe->res));
}

static void on_stop(struct loop *l, struct loop_op *op, const struct io_uring_cqe *cqe)
{
	(void)op;
	(void)cqe;
	loop_stop(l);
}

static void broadcast(struct serve *sv, json_object *ev)
{
	for (struct client *c = sv->clients; c; c = c->next)
		if (c->events)
			send_line(c, ev);
	json_object_put(ev);
}

static json_object *event(const char *name)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "event", json_object_new_string(name));
	return o;
}

/* The event stream: the VM's state when it changes, the migration's
 * progress while it runs, and its end with the report. */
static void on_tick(struct loop *l, struct loop_op *op, const struct io_uring_cqe *cqe)
{
	struct serve *sv = (struct serve *)l->opaque;
	struct api_server *s = sv->s;
	bool any = false;

	(void)op;
	(void)cqe;
	for (struct client *c = sv->clients; c; c = c->next)
		any |= c->events && !c->dead;
	pthread_mutex_lock(&s->lock);
	enum mig_state m = s->mig;
	pthread_mutex_unlock(&s->lock);
	if (any) {
		const char *st = vm_state(s);
		if (st != sv->last_state) {
			json_object *ev = event("state");
			json_object_object_add(ev, "state", json_object_new_string(st));
			broadcast(sv, ev);
			sv->last_state = st;
		}
		if (m == MIG_ACTIVE) {
			json_object *ev = do_migrate_status(s);
			json_object_object_del(ev, "ok");
			json_object_object_add(ev, "event", json_object_new_string("progress"));
			broadcast(sv, ev);
		} else if (m == MIG_ENDED && sv->last_mig != MIG_ENDED) {
			/* migrate-status with the report: a subscriber has read it */
			json_object *ev = do_migrate_status(s);
			json_object_object_del(ev, "ok");
			json_object_object_add(ev, "event", json_object_new_string("migration"));
			broadcast(sv, ev);
		}
	}
	sv->last_mig = m;
	loop_timer(l, &sv->tick_op, &sv->tick);
}

/* Frees the clients that left; runs before the loop sleeps. */
static void reap(struct loop *l, void *opaque)
{
	struct serve *sv = opaque;

	(void)l;
	for (struct client **pc = &sv->clients; *pc;) {
		struct client *c = *pc;
		if (!c->dead || c->op.inflight) {
			if (c->dead && c->op.inflight)
				shutdown(c->fd, SHUT_RDWR); /* its recv ends now */
			pc = &c->next;
			continue;
		}
		*pc = c->next;
		close(c->fd);
		free(c);
	}
}

static void *api_thread(void *arg)
{
	struct serve sv = {.s = arg, .tick = {.tv_nsec = 200000000}};
	thread_name("api");
	int r = loop_init(&sv.loop, 64);

	if (r) {
		log_err("API: io_uring: %s", strerror(-r));
		return NULL;
	}
	sv.loop.opaque = &sv;
	sv.loop.before_sleep = reap;
	sv.accept_op.cb = on_accept;
	sv.stop_op.cb = on_stop;
	sv.tick_op.cb = on_tick;
	loop_poll(&sv.loop, &sv.accept_op, sv.s->lfd, POLLIN);
	struct io_uring_sqe *sqe = loop_sqe(&sv.loop, &sv.stop_op);
	if (sqe)
		io_uring_prep_read(sqe, sv.s->stop_fd, &sv.stop_val, sizeof(sv.stop_val), 0);
	loop_timer(&sv.loop, &sv.tick_op, &sv.tick);
	r = loop_run(&sv.loop);
	if (r)
		log_err("API loop: %s", strerror(-r));
	/* Nothing the kernel may still write into is freed before its CQE. */
	for (struct client *c = sv.clients; c; c = c->next) {
		c->dead = true;
		shutdown(c->fd, SHUT_RDWR);
	}
	for (struct client *c = sv.clients; c; c = c->next)
		loop_drain(&sv.loop, &c->op, 1000000000);
	loop_cancel(&sv.loop, &sv.accept_op);
	loop_cancel(&sv.loop, &sv.tick_op);
	loop_drain(&sv.loop, &sv.accept_op, 1000000000);
	loop_drain(&sv.loop, &sv.tick_op, 1000000000);
	reap(&sv.loop, &sv);
	loop_fini(&sv.loop);
	return NULL;
}

int api_start(const char *path, struct vm *vm, const struct mig_params *defaults,
	      struct api_server **out)
{
	struct api_server *s = calloc(1, sizeof(*s));
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int r;

	if (!s)
		return -ENOMEM;
	if (strlen(path) >= sizeof(a.sun_path)) {
		free(s);
		log_err("API socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	snprintf(s->path, sizeof(s->path), "%s", path);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	s->vm = vm;
	s->defaults = *defaults;
	pthread_mutex_init(&s->lock, NULL);
	s->stop_fd = eventfd(0, EFD_CLOEXEC);
	s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s->stop_fd < 0 || s->lfd < 0) {
		r = -errno;
		goto fail;
	}
	unlink(path); /* a stale socket of an earlier flit */
	if (bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) || listen(s->lfd, 8)) {
		r = -errno;
		log_err("API socket %s: %s", path, strerror(errno));
		goto fail;
	}
	r = -pthread_create(&s->thread, NULL, api_thread, s);
	if (r)
		goto fail;
	*out = s;
	return 0;
fail:
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->stop_fd >= 0)
		close(s->stop_fd);
	free(s);
	return r;
}

void api_stop(struct api_server *s)
{
	uint64_t one = 1;

	if (!s)
		return;
	if (write(s->stop_fd, &one, sizeof(one)) < 0)
		log_debug("api stop: %s", strerror(errno));
	pthread_join(s->thread, NULL);
	__atomic_store_n(&s->cancel, 1, __ATOMIC_RELAXED);
	if (s->mig_thread_started)
		pthread_join(s->mig_thread, NULL);
	close(s->lfd);
	close(s->stop_fd);
	unlink(s->path);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

bool api_migrated(struct api_server *s)
{
	pthread_mutex_lock(&s->lock);
	bool r = s->migrated;
	pthread_mutex_unlock(&s->lock);
	return r;
}

bool api_lost(struct api_server *s)
{
	pthread_mutex_lock(&s->lock);
	bool r = s->lost;
	pthread_mutex_unlock(&s->lock);
	return r;
}

bool api_quit_requested(struct api_server *s)
{
	pthread_mutex_lock(&s->lock);
	bool r = s->quit;
	pthread_mutex_unlock(&s->lock);
	return r;
}

void api_wait_final_read(struct api_server *s, int timeout_ms)
{
	for (int waited = 0; waited < timeout_ms; waited += 20) {
		pthread_mutex_lock(&s->lock);
		bool done = s->final_read;
		pthread_mutex_unlock(&s->lock);
		if (done)
			return;
		usleep(20000);
	}
}
