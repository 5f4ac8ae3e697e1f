// SPDX-License-Identifier: MIT
#include "memsvc_peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/util.h"
#include "tests/lib/proc.h"
#include "tests/lib/test.h"

/* ---- the service ---- */

static char tmp_root[64];
static pid_t live[8]; /* children a failed case may have left running */

void memsvc_peer_track(pid_t pid)
{
	for (unsigned i = 0; i < ARRAY_SIZE(live); i++)
		if (!live[i]) {
			live[i] = pid;
			return;
		}
}

void memsvc_peer_untrack(pid_t pid)
{
	for (unsigned i = 0; i < ARRAY_SIZE(live); i++)
		if (live[i] == pid)
			live[i] = 0;
}

static void cleanup(void)
{
	char cmd[128];

	for (unsigned i = 0; i < ARRAY_SIZE(live); i++)
		if (live[i] > 0) {
			kill(live[i], SIGKILL);
			waitpid(live[i], NULL, 0);
			live[i] = 0;
		}
	if (tmp_root[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_root);
		if (system(cmd))
			fprintf(stderr, "could not remove %s\n", tmp_root);
	}
}

bool memsvc_peer_setup(const char *prefix)
{
	snprintf(tmp_root, sizeof(tmp_root), "/tmp/%s-XXXXXX", prefix);
	if (!mkdtemp(tmp_root)) {
		perror("mkdtemp");
		tmp_root[0] = 0;
		return false;
	}
	atexit(cleanup);
	return true;
}

const char *memsvc_peer_tmp(void)
{
	return tmp_root;
}

void memsvc_peer_start(struct memsvc_peer *s, const char *name, uint16_t port, ...)
{
	char listen[32], buf[8192];
	const char *argv[12] = {test_build_path("flit-memsvc"), "--listen", listen};
	const char *arg;
	unsigned n = 3;
	va_list ap;

	va_start(ap, port);
	while ((arg = va_arg(ap, const char *)) && n < ARRAY_SIZE(argv) - 1)
		argv[n++] = arg;
	va_end(ap);
	TEST_ASSERT(!arg, "more than %u arguments for flit-memsvc", n - 3);
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
	snprintf(s->log, sizeof(s->log), "%s/%s.log", tmp_root, name);
	s->pid = proc_spawn(s->log, argv);
	TEST_ASSERT(s->pid > 0, "spawn");
	memsvc_peer_track(s->pid);
	/* a nested lab VM may take a while to start it */
	bool up = proc_wait_log(s->log, "listening on", 20);
	proc_read_file(s->log, buf, sizeof(buf));
	TEST_ASSERT(up, "flit-memsvc did not start; its log:\n%s", buf);
	const char *p = strstr(buf, "listening on 127.0.0.1:");
	TEST_ASSERT(p, "no address in: %s", buf);
	s->port = (uint16_t)atoi(p + strlen("listening on 127.0.0.1:"));
	TEST_ASSERT(s->port && (!port || s->port == port), "port %u (asked %u)", s->port, port);
}

void memsvc_peer_stop(struct memsvc_peer *s, char *tail, size_t len)
{
	static char buf[65536];

	if (!tail) {
		tail = buf;
		len = sizeof(buf);
	}
	kill(s->pid, SIGTERM);
	int rc = proc_wait(s->pid, 10);
	memsvc_peer_untrack(s->pid);
	s->pid = 0;
	proc_read_tail(s->log, tail, len);
	TEST_ASSERT(rc == 0, "flit-memsvc exit status %d after SIGTERM; log:\n%s", rc, tail);
}

int memsvc_peer_kill(struct memsvc_peer *s)
{
	if (s->pid <= 0)
		return -1;
	kill(s->pid, SIGKILL);
	int rc = proc_wait(s->pid, 10);
	memsvc_peer_untrack(s->pid);
	s->pid = 0;
	return rc;
}

struct memsvc_client *memsvc_peer_connect(uint16_t port)
{
	char why[256] = "";
	int err = 0;
	struct memsvc_client *c = memsvc_connect("127.0.0.1", port, 5000, &err, why, sizeof(why));

	TEST_ASSERT(c, "connect: %s (%d)", why, err);
	return c;
}

/* ---- the protocol by hand ---- */

int raw_connect(uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons(port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct timeval tv = {.tv_sec = 5};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	TEST_ASSERT(fd >= 0, "socket");
	TEST_ASSERT_EQ(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	/* a service that never answers fails the case instead of hanging it */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

void raw_send(int fd, const void *buf, size_t len)
{
	TEST_ASSERT(send(fd, buf, len, MSG_NOSIGNAL) == (ssize_t)len, "send: %s", strerror(errno));
}

void raw_record(int fd, uint8_t type, uint32_t id, const void *p, uint32_t len, bool bad_crc)
{
	uint8_t buf[MEMSVC_HDR_SIZE + 1024];
	struct memsvc_hdr h = {
	    .magic = MEMSVC_MAGIC, .version = MEMSVC_VERSION, .type = type, .id = id, .len = len};

	TEST_ASSERT(len <= 1024, "test record too long");
	h.crc = crc32c(memsvc_hdr_crc(&h), p, len) ^ (bad_crc ? 1 : 0);
	memcpy(buf, &h, sizeof(h));
	if (len)
		memcpy(buf + sizeof(h), p, len);
	raw_send(fd, buf, sizeof(h) + len);
}

bool raw_read(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = recv(fd, p, len, 0);
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

bool raw_answer(int fd, struct memsvc_hdr *h, void *payload, size_t cap, uint32_t *code, char *msg,
		size_t msglen)
{
	static uint8_t own[MEMSVC_MAX_PAYLOAD];

	if (!payload) {
		payload = own;
		cap = sizeof(own);
	}
	if (!raw_read(fd, h, sizeof(*h)))
		return false;
	TEST_ASSERT_EQ(h->magic, MEMSVC_MAGIC);
	TEST_ASSERT(h->len <= cap, "answer length %u", h->len);
	if (!raw_read(fd, payload, h->len))
		return false;
	TEST_ASSERT_EQ(h->crc, crc32c(memsvc_hdr_crc(h), payload, h->len));
	*code = 0;
	msg[0] = 0;
	if (h->type == MEMSVC_ERROR) {
		struct memsvc_error e;
		memcpy(&e, payload, sizeof(e));
		TEST_ASSERT_EQ(e.len + sizeof(e), h->len);
		*code = e.code;
		snprintf(msg, msglen, "%.*s", (int)e.len, (char *)payload + sizeof(e));
	}
	return true;
}

uint32_t raw_hello(int fd)
{
	struct memsvc_hello req = {.min_version = 1, .max_version = 1};
	struct memsvc_hello_ok ok;
	struct memsvc_hdr a;
	uint8_t payload[256];
	uint32_t code;
	char msg[256];

	raw_record(fd, MEMSVC_HELLO, 1, &req, sizeof(req), false);
	TEST_ASSERT(raw_answer(fd, &a, payload, sizeof(payload), &code, msg, sizeof(msg)),
		    "no HELLO answer");
	TEST_ASSERT(a.type == MEMSVC_HELLO_OK && a.len == sizeof(ok), "HELLO answered %#x: %s",
		    a.type, msg);
	memcpy(&ok, payload, sizeof(ok));
	return ok.features;
}

void raw_open(int fd, const char *ns, const char *token)
{
	uint8_t buf[256];
	struct memsvc_ns_req r = {.name_len = (uint8_t)strlen(ns),
				  .token_len = (uint8_t)strlen(token)};
	struct memsvc_hdr a;
	uint32_t code;
	char msg[256];

	memcpy(buf, &r, sizeof(r));
	memcpy(buf + sizeof(r), ns, r.name_len);
	memcpy(buf + sizeof(r) + r.name_len, token, r.token_len);
	raw_record(fd, MEMSVC_OPEN, 2, buf, (uint32_t)(sizeof(r) + r.name_len + r.token_len),
		   false);
	TEST_ASSERT(raw_answer(fd, &a, NULL, 0, &code, msg, sizeof(msg)), "no OPEN answer");
	TEST_ASSERT(a.type == MEMSVC_OPEN_OK, "OPEN answered %#x: %s", a.type, msg);
}

/* ---- page patterns ---- */

void page_fill(uint8_t *p, unsigned ns, uint64_t gfn, unsigned v)
{
	uint64_t *w = (uint64_t *)p;

	for (unsigned i = 0; i < MEMSVC_PAGE / 8; i++)
		w[i] = ((uint64_t)ns << 56) ^ (gfn << 20) ^ ((uint64_t)v << 12) ^ i ^ 0x5a5a0000;
}

bool page_check(const uint8_t *p, unsigned ns, uint64_t gfn, unsigned v)
{
	uint8_t want[MEMSVC_PAGE];

	page_fill(want, ns, gfn, v);
	return !memcmp(p, want, MEMSVC_PAGE);
}

bool page_all_zero(const uint8_t *p)
{
	for (unsigned i = 0; i < MEMSVC_PAGE; i++)
		if (p[i])
			return false;
	return true;
}
