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
#include "common/util.h"
#include "migrate/conn.h"
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
	bool final_read; /* a client got the ended migration's status */
	pthread_t mig_thread;
	bool mig_thread_started;
	/* atomics */
	struct mig_progress progress;
	volatile int cancel;
};

static void *mig_thread(void *arg)
{
	struct api_server *s = arg;
	struct mig_report rep;
	int r = mig_source_run(s->vm, &s->mp, &rep);

	pthread_mutex_lock(&s->lock);
	s->rep = rep;
	s->mig_r = r;
	s->mig = MIG_ENDED;
	s->migrated = r == 0;
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

static const char *vm_state(struct api_server *s)
{
	if (s->migrated)
		return "migrated";
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
	memset(&s->progress, 0, sizeof(s->progress));
	p.cancel = &s->cancel;
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
	static const char *const phases[] = {"none", "setup", "iterate", "stop-and-copy", "done"};
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
	json_object_object_add(o, "phase", json_object_new_string(phases[pg.phase % 5]));
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
	return o;
}

static json_object *handle(struct api_server *s, const char *line)
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
	} else if (!strcmp(cmd, "quit")) {
		pthread_mutex_lock(&s->lock);
		s->quit = true;
		pthread_mutex_unlock(&s->lock);
		__atomic_store_n(&s->cancel, 1, __ATOMIC_RELAXED);
		vm_notify(s->vm);
		reply = ok_reply();
	} else {
		reply = error_reply("unknown command '%.40s' (status, pause, resume, migrate, "
				    "migrate-status, migrate-cancel, quit)",
				    cmd);
	}
	json_object_put(req);
	return reply;
}

/* One client: lines in, lines out, until it closes or the server stops. */
static void serve_client(struct api_server *s, int fd)
{
	char buf[REQ_MAX + 1];
	size_t len = 0;

	for (;;) {
		struct pollfd p[2] = {{.fd = fd, .events = POLLIN},
				      {.fd = s->stop_fd, .events = POLLIN}};
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			return;
		if (p[1].revents)
			return;
		if (!p[0].revents)
			continue;
		ssize_t n = read(fd, buf + len, REQ_MAX - len);
		if (n <= 0)
			return;
		len += (size_t)n;
		char *nl;
		while ((nl = memchr(buf, '\n', len))) {
			*nl = 0;
			json_object *reply = handle(s, buf);
			const char *t = json_object_to_json_string_ext(
			    reply, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
			size_t tn = strlen(t);
			if (send(fd, t, tn, MSG_NOSIGNAL) != (ssize_t)tn ||
			    send(fd, "\n", 1, MSG_NOSIGNAL) != 1) {
				json_object_put(reply);
				return; /* the client left */
			}
			json_object_put(reply);
			len -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, len);
		}
		if (len == REQ_MAX) {
			static const char msg[] = "{\"ok\":false,\"error\":\"request too long\"}\n";
			(void)!send(fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL);
			return;
		}
	}
}

static void *api_thread(void *arg)
{
	struct api_server *s = arg;

	for (;;) {
		struct pollfd p[2] = {{.fd = s->lfd, .events = POLLIN},
				      {.fd = s->stop_fd, .events = POLLIN}};
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (!p[0].revents)
			continue;
		int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		serve_client(s, fd);
		close(fd);
	}
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
	s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
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
