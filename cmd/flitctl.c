// SPDX-License-Identifier: MIT
/*
 * flitctl: the command-line client of a flit process's control API.
 *
 *   flitctl --api PATH status | pause | resume | migrate-status | migrate-cancel | quit
 *   flitctl --api PATH migrate tcp:HOST:PORT [channels=N] [downtime_limit_ms=N]
 *           [max_rounds=N] [bandwidth=BYTES] [auto_converge=false] [--no-wait]
 *
 * Prints each reply as one JSON line. 'migrate' then follows the migration:
 * a progress line on a terminal, JSON lines otherwise, and the final report;
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

/* Sends one request, returns the parsed reply (NULL on a broken API). */
static json_object *call(int fd, json_object *req)
{
	static char buf[65536];
	size_t len = 0;
	const char *t = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN |
								JSON_C_TO_STRING_NOSLASHESCAPE);

	size_t tlen = strlen(t);
	if (send(fd, t, tlen, MSG_NOSIGNAL) != (ssize_t)tlen ||
	    send(fd, "\n", 1, MSG_NOSIGNAL) != 1)
		return NULL;
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			return NULL;
		len += (size_t)n;
		char *nl = memchr(buf, '\n', len);
		if (nl) {
			*nl = 0;
			return json_tokener_parse(buf);
		}
		if (len == sizeof(buf) - 1)
			return NULL;
	}
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

static int follow(int fd, bool tty)
{
	json_object *req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("migrate-status"));
	for (;;) {
		json_object *r = call(fd, req);
		if (!reply_ok(r)) {
			fprintf(stderr, "flitctl: the API went away before the migration's end "
					"was seen\n");
			json_object_put(req);
			return 2;
		}
		const char *status = str(r, "status");
		if (strcmp(status, "active")) {
			json_object *rep;
			if (tty)
				fputc('\n', stderr);
			if (json_object_object_get_ex(r, "report", &rep))
				printf("%s\n", json_object_to_json_string_ext(
						   rep, JSON_C_TO_STRING_PLAIN |
							    JSON_C_TO_STRING_NOSLASHESCAPE));
			int rc = !strcmp(status, "completed") ? 0 : 1;
			if (rc)
				fprintf(stderr, "flitctl: migration %s: %s\n", status,
					json_object_object_get_ex(r, "report", &rep)
					    ? str(rep, "error")
					    : "");
			json_object_put(r);
			json_object_put(req);
			return rc;
		}
		if (tty)
			fprintf(stderr,
				"\r%-13s round %3.0f  %8.1f MB  %7.0f Mbit/s  dirty %7.0f pages "
				"(%6.0f/s)"
				"  est. downtime %7.2f ms  throttle %2.0f%% ",
				str(r, "phase"), num(r, "round"), num(r, "bytes") / 1e6,
				num(r, "bandwidth_mbps"), num(r, "dirty_pages"),
				num(r, "dirty_rate_pps"), num(r, "est_downtime_ms"),
				num(r, "throttle_pct"));
		else
			printf("%s\n",
			       json_object_to_json_string_ext(
				   r, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
		fflush(stdout);
		json_object_put(r);
		usleep(200000);
	}
}

static int usage(void)
{
	fprintf(stderr, "usage: flitctl --api PATH COMMAND [key=value ...]\n"
			"commands: status, pause, resume, migrate TARGET, migrate-status,\n"
			"          migrate-cancel, quit (docs/api.md)\n");
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
	json_object *req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string(cmd));
	if (!strcmp(cmd, "migrate")) {
		if (i >= argc || strncmp(argv[i], "tcp:", 4)) {
			fprintf(stderr, "flitctl: migrate needs a target tcp:HOST:PORT\n");
			return 64;
		}
		json_object_object_add(req, "target", json_object_new_string(argv[i++]));
	}
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
	printf("%s\n", json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN |
							     JSON_C_TO_STRING_NOSLASHESCAPE));
	fflush(stdout);
	int rc = reply_ok(r) ? 0 : 1;
	if (!rc && !strcmp(cmd, "migrate") && wait)
		rc = follow(fd, isatty(STDERR_FILENO));
	json_object_put(r);
	json_object_put(req);
	close(fd);
	return rc;
}
