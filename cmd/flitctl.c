// SPDX-License-Identifier: MIT
/*
 * flitctl: the command-line client of a flit process's control API.
 *
 *   flitctl --api PATH status | pause | resume | migrate-status | migrate-cancel | quit
 *   flitctl --api PATH migrate-recover [tcp:HOST:PORT]
 *   flitctl --api PATH events
 *   flitctl --api PATH migrate tcp:HOST:PORT [channels=N] [downtime_limit_ms=N]
 *           [max_rounds=N] [bandwidth=BYTES] [auto_converge=false] [--no-wait]
 *
 * Prints each reply as one JSON line. 'migrate' then follows the migration
 * through the event stream: a progress line on a terminal (phase, round,
 * bytes, pages/s, dirty pages and rate, estimated downtime, throttle, ETA),
 * JSON lines otherwise, and the final report; 'events' prints every event;
 * it exits 0 only if the migration completed. Exit 1 for a refused request,
 * 2 if the API cannot be reached, 64 for a bad command line.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/util.h"

static int api_connect(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || strlen(path) >= sizeof(a.sun_path))
		return -1;
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Lines from the API socket; what follows a line stays for the next. */
static char rbuf[65536];
static size_t rlen;

static json_object *next_line(int fd)
{
	for (;;) {
		char *nl = memchr(rbuf, '\n', rlen);
		if (nl) {
			*nl = 0;
			json_object *o = json_tokener_parse(rbuf);
			rlen -= (size_t)(nl + 1 - rbuf);
			memmove(rbuf, nl + 1, rlen);
			return o;
		}
		if (rlen == sizeof(rbuf))
			return NULL;
		ssize_t n = read(fd, rbuf + rlen, sizeof(rbuf) - rlen);
		if (n <= 0)
			return NULL;
		rlen += (size_t)n;
	}
}

static bool is_event(json_object *o)
{
	json_object *v;
	return json_object_object_get_ex(o, "event", &v);
}

/* Sends one request, returns the parsed reply (NULL on a broken API).
 * Event lines that come first are left out. */
static json_object *call(int fd, json_object *req)
{
	const char *t = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN |
								JSON_C_TO_STRING_NOSLASHESCAPE);
	size_t tlen = strlen(t);

	if (send(fd, t, tlen, MSG_NOSIGNAL) != (ssize_t)tlen ||
	    send(fd, "\n", 1, MSG_NOSIGNAL) != 1)
		return NULL;
	for (;;) {
		json_object *o = next_line(fd);
		if (!o || !is_event(o))
			return o;
		json_object_put(o);
	}
}

static json_object *call_cmd(int fd, const char *cmd)
{
	json_object *req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string(cmd));
	json_object *r = call(fd, req);
	json_object_put(req);
	return r;
}

static void print_json(json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							     JSON_C_TO_STRING_NOSLASHESCAPE));
	fflush(stdout);
}

static bool reply_ok(json_object *r)
{
	json_object *v;
	return r && json_object_object_get_ex(r, "ok", &v) && json_object_get_boolean(v);
}

static const char *str(json_object *o, const char *k)
{
	json_object *v;
	return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : "";
}

static double num(json_object *o, const char *k)
{
	json_object *v;
	return json_object_object_get_ex(o, k, &v) ? json_object_get_double(v) : 0;
}

/* The end of a migration: its report, and 0 only if it completed. */
static int finished(json_object *r, bool tty)
{
	const char *status = str(r, "status");
	json_object *rep;
	bool has_rep = json_object_object_get_ex(r, "report", &rep);

	if (tty)
		fputc('\n', stderr);
	if (has_rep)
		print_json(rep);
	if (!strcmp(status, "completed"))
		return 0;
	fprintf(stderr, "flitctl: migration %s: %s\n", status, has_rep ? str(rep, "error") : "");
	return 1;
}

/* One progress line on a terminal: where the migration is and what is left. */
static void progress_line(json_object *e, double *last_pages, double *last_t)
{
	double now = (double)now_ns() / 1e9, pages = num(e, "pages_sent");
	double pps = *last_t > 0 && now > *last_t ? (pages - *last_pages) / (now - *last_t) : 0;
	double bw = num(e, "bandwidth_mbps") * 1e6 / 8, left;

	/* Round 1 sends all of RAM; later rounds what was dirtied. */
	if (num(e, "round") <= 1)
		left = num(e, "mem_bytes") - pages * 4096;
	else
		left = num(e, "dirty_pages") * 4096;
	double eta = pps > 0 ? left / 4096 / pps : bw > 0 ? left / bw : 0;
	*last_pages = pages;
	*last_t = now;
	fprintf(stderr,
		"\r%-13s round %3.0f  %9.1f MB  %8.0f pages/s  dirty %7.0f pages (%6.0f/s)  "
		"est. downtime %7.2f ms  throttle %2.0f%%  ETA %5.1f s ",
		str(e, "phase"), num(e, "round"), num(e, "bytes") / 1e6, pps, num(e, "dirty_pages"),
		num(e, "dirty_rate_pps"), num(e, "est_downtime_ms"), num(e, "throttle_pct"),
		eta > 0 ? eta : 0);
}

/* Follows a migration through the event stream until it ends. */
static int follow(int fd, bool tty)
{
	json_object *r = call_cmd(fd, "subscribe");
	double last_pages = 0, last_t = 0;

	if (!reply_ok(r)) {
		fprintf(stderr, "flitctl: the API refused the event stream\n");
		json_object_put(r);
		return 2;
	}
	json_object_put(r);
	/* It may have ended before the subscription. */
	r = call_cmd(fd, "migrate-status");
	if (reply_ok(r) && strcmp(str(r, "status"), "active")) {
		int rc = finished(r, tty);
		json_object_put(r);
		return rc;
	}
	json_object_put(r);
	while ((r = next_line(fd))) {
		const char *ev = str(r, "event");
		if (!strcmp(ev, "migration")) {
			int rc = finished(r, tty);
			json_object_put(r);
			return rc;
		}
		if (!strcmp(ev, "progress")) {
			if (tty)
				progress_line(r, &last_pages, &last_t);
			else
				print_json(r);
		}
		json_object_put(r);
	}
	fprintf(stderr, "flitctl: the API went away before the migration's end was seen\n");
	return 2;
}

/* flitctl events: every event line until the flit process goes. */
static int events(int fd)
{
	json_object *r;

	while ((r = next_line(fd))) {
		if (is_event(r))
			print_json(r);
		json_object_put(r);
	}
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: flitctl --api PATH COMMAND [key=value ...]\n"
			"commands: status, pause, resume, migrate TARGET, migrate-status,\n"
			"          migrate-cancel, migrate-postcopy, migrate-recover [TARGET],\n"
			"          events, quit (docs/api.md)\n");
	return 64;
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	bool wait = true;
	int i = 1;

	if (i + 1 < argc && !strcmp(argv[i], "--api")) {
		path = argv[i + 1];
		i += 2;
	}
	if (!path || i >= argc)
		return usage();
	const char *cmd = argv[i++];
	bool ev = !strcmp(cmd, "events");
	json_object *req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string(ev ? "subscribe" : cmd));
	if (!strcmp(cmd, "migrate")) {
		if (i >= argc || strncmp(argv[i], "tcp:", 4)) {
			fprintf(stderr, "flitctl: migrate needs a target tcp:HOST:PORT\n");
			return 64;
		}
		json_object_object_add(req, "target", json_object_new_string(argv[i++]));
	}
	/* migrate-recover: optionally somewhere else than the first target */
	if (!strcmp(cmd, "migrate-recover") && i < argc && !strncmp(argv[i], "tcp:", 4))
		json_object_object_add(req, "target", json_object_new_string(argv[i++]));
	for (; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		uint64_t v;
		if (!strcmp(argv[i], "--no-wait")) {
			wait = false;
			continue;
		}
		if (!eq || eq == argv[i]) {
			fprintf(stderr, "flitctl: '%s' is not key=value\n", argv[i]);
			return 64;
		}
		*eq = 0;
		if (!parse_size(eq + 1, &v))
			json_object_object_add(req, argv[i], json_object_new_int64((int64_t)v));
		else if (!strcmp(eq + 1, "true") || !strcmp(eq + 1, "false"))
			json_object_object_add(req, argv[i],
					       json_object_new_boolean(!strcmp(eq + 1, "true")));
		else
			json_object_object_add(req, argv[i], json_object_new_string(eq + 1));
	}
	int fd = api_connect(path);
	if (fd < 0) {
		fprintf(stderr, "flitctl: cannot reach the API at %s: %s\n", path, strerror(errno));
		return 2;
	}
	json_object *r = call(fd, req);
	if (!r) {
		fprintf(stderr, "flitctl: no answer from %s\n", path);
		return 2;
	}
	print_json(r);
	int rc = reply_ok(r) ? 0 : 1;
	if (!rc && ev)
		rc = events(fd);
	if (!rc && !strcmp(cmd, "migrate") && wait)
		rc = follow(fd, isatty(STDERR_FILENO));
	json_object_put(r);
	json_object_put(req);
	close(fd);
	return rc;
}
