// SPDX-License-Identifier: MIT
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/util.h"
#include "memsvc/proto.h"
#include "memsvc/rdma_svc.h"
#include "memsvc/store.h"

#define IN_START   (16 * 1024) /* a connection's first receive buffer */
#define RECORD_MAX (MEMSVC_HDR_SIZE + MEMSVC_MAX_PAYLOAD)
#define MAX_CONNS  1024

/*
 * A connection works on one record at a time: receive until a whole record
 * is buffered, handle it, send its answer, and only when the answer is out
 * look at the next record (or receive again). So a connection has at most
 * one operation in flight, its buffers are bounded by one record and one
 * answer, and a client that does not read its answers only stalls itself:
 * the 1 s tick drops it when its send has waited longer than the timeout.
 */
struct conn {
	struct loop_op op; /* the one recv or send in flight */
	struct memsvc_server *s;
	int fd;
	bool dead;    /* to be freed once op has nothing in flight */
	bool closing; /* drop after the answer being sent */
	bool sending, hello;
	bool shut; /* shutdown() done to end a pending op */
	uint8_t *in;
	size_t in_cap, in_off, in_len; /* bytes in[in_off, in_off + in_len) */
	uint8_t *out;
	size_t out_cap, out_len, out_sent;
	uint64_t send_start_ns;
	struct ms_ns *ns; /* opened on this connection, with epoch */
	uint64_t epoch;
	char peer[64];
	struct conn *next;
};

struct memsvc_server {
	struct memsvc_server_opts o;
	struct ms_store *st;
	int lfd;
	char addr[80];
	struct loop loop;
	bool loop_ok;
	struct loop_op accept_op, stop_op, tick_op;
	struct ms_rdma *rdma; /* NULL without --rdma */
	struct loop_op rdma_op;
	struct __kernel_timespec tick;
	struct conn *conns;
	unsigned nr_conns;
	uint64_t send_timeout_ns;
	char why[256]; /* scratch for refusals */
};

int memsvc_parse_listen(const char *arg, char *host, size_t hostlen, uint16_t *port)
{
	const char *h = arg, *end, *colon = NULL;
	uint64_t p = MEMSVC_DEFAULT_PORT;
	size_t hl;

	if (!strncmp(h, "tcp:", 4))
		h += 4;
	if (h[0] == '[') {
		end = strchr(h, ']');
		if (!end)
			return -EINVAL;
		if (end[1] == ':')
			colon = end + 1;
		else if (end[1])
			return -EINVAL;
		h++;
		hl = (size_t)(end - h);
	} else {
		colon = strrchr(h, ':');
		if (colon && strchr(h, ':') != colon)
			return -EINVAL; /* a bare IPv6 address needs [] */
		hl = colon ? (size_t)(colon - h) : strlen(h);
	}
	if (hl == 0 || hl >= hostlen)
		return -EINVAL;
	if (colon && parse_uint(colon + 1, 0, 65535, &p))
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = 0;
	*port = (uint16_t)p;
	return 0;
}

/* ---- answers ---- */

static int out_reserve(struct conn *c, size_t len)
{
	if (c->out_cap >= len)
		return 0;
	uint8_t *p = realloc(c->out, len);
	if (!p)
		return -ENOMEM;
	c->out = p;
	c->out_cap = len;
	return 0;
}

/* The payload area of an answer of len bytes; NULL without memory. */
static uint8_t *answer_begin(struct conn *c, uint8_t type, uint32_t id, uint32_t len)
{
	struct memsvc_hdr h = {
	    .magic = MEMSVC_MAGIC, .version = MEMSVC_VERSION, .type = type, .id = id, .len = len};

	if (out_reserve(c, MEMSVC_HDR_SIZE + len))
		return NULL;
	memcpy(c->out, &h, sizeof(h));
	c->out_len = MEMSVC_HDR_SIZE + len;
	return c->out + MEMSVC_HDR_SIZE;
}

static void conn_send(struct conn *c);

static void answer_send(struct conn *c, uint16_t flags)
{
	struct memsvc_hdr *h = (struct memsvc_hdr *)c->out;

	h->flags = flags;
	h->crc = crc32c(memsvc_hdr_crc(h), c->out + MEMSVC_HDR_SIZE, h->len);
	c->out_sent = 0;
	c->send_start_ns = now_ns();
	conn_send(c);
}

static const char *code_name(uint32_t code)
{
	static const char *const names[] = {
	    [MEMSVC_E_NOENT] = "ENOENT", [MEMSVC_E_EXIST] = "EEXIST",
	    [MEMSVC_E_ACCES] = "EACCES", [MEMSVC_E_STALE] = "ESTALE",
	    [MEMSVC_E_NOSPC] = "ENOSPC", [MEMSVC_E_RANGE] = "ERANGE",
	    [MEMSVC_E_2BIG] = "E2BIG",	 [MEMSVC_E_PROTO] = "EPROTO",
	    [MEMSVC_E_INVAL] = "EINVAL", [MEMSVC_E_IO] = "EIO",
	    [MEMSVC_E_NOMEM] = "ENOMEM", [MEMSVC_E_NOTSUP] = "EOPNOTSUPP",
	};
	return code < ARRAY_SIZE(names) && names[code] ? names[code] : "?";
}

/* An ERROR answer; close: a framing error, the connection ends after it. */
__attribute__((format(printf, 5, 6))) static void
answer_error(struct conn *c, uint32_t id, uint32_t code, bool close, const char *fmt, ...)
{
	char msg[MEMSVC_MSG_MAX + 1];
	struct memsvc_error e = {.code = code};
	va_list ap;
	uint8_t *p;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	e.len = (uint32_t)strlen(msg);
	if (close)
		log_warn("client %s: %s (%s), closing", c->peer, msg, code_name(code));
	else
		log_debug("client %s: %s (%s)", c->peer, msg, code_name(code));
	p = answer_begin(c, MEMSVC_ERROR, id, (uint32_t)sizeof(e) + e.len);
	if (!p) {
		c->dead = true;
		return;
	}
	memcpy(p, &e, sizeof(e));
	memcpy(p + sizeof(e), msg, e.len);
	if (close)
		c->closing = true;
	answer_send(c, close ? MEMSVC_F_CLOSE : 0);
}

static uint32_t errno_code(int r)
{
	switch (r) {
	case -ENOENT:
		return MEMSVC_E_NOENT;
	case -EEXIST:
		return MEMSVC_E_EXIST;
	case -EACCES:
		return MEMSVC_E_ACCES;
	case -ESTALE:
		return MEMSVC_E_STALE;
	case -ENOSPC:
		return MEMSVC_E_NOSPC;
	case -ERANGE:
		return MEMSVC_E_RANGE;
	case -E2BIG:
		return MEMSVC_E_2BIG;
	case -EINVAL:
		return MEMSVC_E_INVAL;
	case -ENOMEM:
		return MEMSVC_E_NOMEM;
	case -EOPNOTSUPP:
		return MEMSVC_E_NOTSUP;
	case -EBUSY:
		return MEMSVC_E_BUSY;
	default:
		return MEMSVC_E_IO;
	}
}

static void put_info(uint8_t *p, const struct ms_ns *ns)
{
	struct memsvc_info_wire w = {.nr_pages = ns->nr_pages,
				     .limit_pages = ns->limit_pages,
				     .used_pages = ns->used_pages,
				     .epoch = ns->epoch};
	memcpy(p, &w, sizeof(w));
}

/* ---- requests ---- */

static void do_hello(struct conn *c, const struct memsvc_hdr *h, const uint8_t *p)
{
	struct memsvc_hello req;
	struct memsvc_hello_ok ok = {
	    .version = MEMSVC_VERSION, .max_batch = MEMSVC_MAX_BATCH, .page_size = MEMSVC_PAGE};
	uint8_t *a;

	if (c->hello) {
		answer_error(c, h->id, MEMSVC_E_PROTO, true, "HELLO twice");
		return;
	}
	if (h->len != sizeof(req)) {
		answer_error(c, h->id, MEMSVC_E_PROTO, true, "HELLO of %u bytes, %zu expected",
			     h->len, sizeof(req));
		return;
	}
	memcpy(&req, p, sizeof(req));
	if (req.min_version > MEMSVC_VERSION || req.max_version < MEMSVC_VERSION) {
		answer_error(c, h->id, MEMSVC_E_PROTO, true,
			     "the client speaks versions %u to %u, this service %u",
			     req.min_version, req.max_version, MEMSVC_VERSION);
		return;
	}
	c->hello = true;
	ok.features = MEMSVC_FEAT_ADMIN;
	if (c->s->rdma)
		ok.features |= MEMSVC_FEAT_RDMA;
	a = answer_begin(c, MEMSVC_HELLO_OK, h->id, sizeof(ok));
	if (!a) {
		c->dead = true;
		return;
	}
	memcpy(a, &ok, sizeof(ok));
	answer_send(c, 0);
}

/* Parses CREATE/OPEN; false (answered, closing) when malformed. */
static bool ns_req_parse(struct conn *c, const struct memsvc_hdr *h, const uint8_t *p,
			 struct memsvc_ns_req *r, char name[MEMSVC_NAME_MAX + 1],
			 const uint8_t **token)
{
	if (h->len < sizeof(*r)) {
		answer_error(c, h->id, MEMSVC_E_PROTO, true, "request of %u bytes is too short",
			     h->len);
		return false;
	}
	memcpy(r, p, sizeof(*r));
	if (h->len != sizeof(*r) + r->name_len + r->token_len) {
		answer_error(c, h->id, MEMSVC_E_PROTO, true,
			     "request of %u bytes, but a %u-byte name and %u-byte token", h->len,
			     r->name_len, r->token_len);
		return false;
	}
	if (!memsvc_name_valid((const char *)p + sizeof(*r), r->name_len)) {
		answer_error(c, h->id, MEMSVC_E_INVAL, false,
			     "bad namespace name: 1 to %u of A-Z a-z 0-9 . _ -, not starting "
			     "with '.'",
			     MEMSVC_NAME_MAX);
		return false;
	}
	memcpy(name, p + sizeof(*r), r->name_len);
	name[r->name_len] = 0;
	*token = p + sizeof(*r) + r->name_len;
	if (r->token_len == 0) {
		answer_error(c, h->id, MEMSVC_E_INVAL, false, "an empty token");
		return false;
	}
	return true;
}

static void do_create(struct conn *c, const struct memsvc_hdr *h, const uint8_t *p)
{
	struct memsvc_ns_req r;
	char name[MEMSVC_NAME_MAX + 1];
	const uint8_t *token;
	int e;

	if (!ns_req_parse(c, h, p, &r, name, &token))
		return;
	e = ms_ns_create(c->s->st, name, token, r.token_len, r.nr_pages, r.limit_pages, c->s->why,
			 sizeof(c->s->why));
	if (e) {
		answer_error(c, h->id, errno_code(e), false, "%s", c->s->why);
		return;
	}
	if (!answer_begin(c, MEMSVC_CREATE_OK, h->id, 0)) {
		c->dead = true;
		return;
	}
	answer_send(c, 0);
}

/* The namespace an ns request names, if its token is right; NULL (and
 * answered) otherwise. */
static struct ms_ns *ns_request_checked(struct conn *c, const struct memsvc_hdr *h,
					const uint8_t *p, struct memsvc_ns_req *r, char *name)
{
	const uint8_t *token;
	struct ms_ns *ns;

	if (!ns_req_parse(c, h, p, r, name, &token))
		return NULL;
	ns = ms_ns_find(c->s->st, name, r->name_len);
	if (!ns) {
		answer_error(c, h->id, MEMSVC_E_NOENT, false, "no namespace %s", name);
		return NULL;
	}
	if (!ms_ns_token_ok(ns, token, r->token_len)) {
		log_warn("client %s: wrong token for namespace %s (%s)", c->peer, name,
			 h->type == MEMSVC_DELETE ? "DELETE" : "OPEN");
		answer_error(c, h->id, MEMSVC_E_ACCES, false, "wrong token for namespace %s", name);
		return NULL;
	}
	return ns;
}

static void do_open(struct conn *c, const struct memsvc_hdr *h, const uint8_t *p)
{
	struct memsvc_ns_req r;
	char name[MEMSVC_NAME_MAX + 1];
	struct ms_ns *ns = ns_request_checked(c, h, p, &r, name);
	uint8_t *a;

	if (!ns)
		return;
	if (r.epoch == 0) {
		if (ms_ns_set_epoch(c->s->st, ns, ns->epoch + 1, c->s->why, sizeof(c->s->why))) {
			log_err("%s", c->s->why);
			answer_error(c, h->id, MEMSVC_E_IO, false, "%s", c->s->why);
			return;
		}
		log_info("namespace %s: owner epoch %llu (client %s)", name,
			 (unsigned long long)ns->epoch, c->peer);
		/* before the new owner hears of its epoch: no old rkey works
		 * once it may write */
		if (c->s->rdma)
			ms_rdma_fence(c->s->rdma, ns);
	} else if (r.epoch < ns->epoch) {
		answer_error(c, h->id, MEMSVC_E_STALE, false,
			     "namespace %s was handed over: epoch %llu is newer than yours (%llu)",
			     name, (unsigned long long)ns->epoch, (unsigned long long)r.epoch);
		return;
	} else if (r.epoch > ns->epoch) {
		answer_error(c, h->id, MEMSVC_E_STALE, false,
			     "namespace %s: epoch %llu was never given out (it is at %llu)", name,
			     (unsigned long long)r.epoch, (unsigned long long)ns->epoch);
		return;
	}
	c->ns = ns;
	c->epoch = ns->epoch;
	a = answer_begin(c, MEMSVC_OPEN_OK, h->id, sizeof(struct memsvc_info_wire));
	if (!a) {
		c->dead = true;
		return;
	}
	put_info(a, ns);
	answer_send(c, 0);
}

/* A connection other than c that holds ns at its current epoch (its owner,
 * live), or NULL. */
static struct conn *live_owner(struct conn *c, const struct ms_ns *ns)
{
	for (struct conn *o = c->s->conns; o; o = o->next)
		if (o != c && !o->dead && o->ns == ns && o->epoch == ns->epoch)
			return o;
	return NULL;
}

/* Deletes a namespace, given its token, unless another connection owns it
 * now (a guest running on it): that is BUSY, and the owner can be stopped,
 * or the namespace taken (OPEN) and then deleted. */
static void do_delete(struct conn *c, const struct memsvc_hdr *h, const uint8_t *p)
{
	struct memsvc_ns_req r;
	char name[MEMSVC_NAME_MAX + 1];
	struct ms_ns *ns = ns_request_checked(c, h, p, &r, name);
	struct conn *o;

	if (!ns)
		return;
	if ((o = live_owner(c, ns))) {
		answer_error(c, h->id, MEMSVC_E_BUSY, false,
			     "namespace %s is in use: client %s owns it (epoch %llu)", name,
			     o->peer, (unsigned long long)ns->epoch);
		return;
	}
	/* Every holder fenced first: an older epoch's connections are refused
	 * from now on, and no rkey reaches the pages once they are unmapped. */
	ns->epoch++;
	if (c->s->rdma)
		ms_rdma_fence(c->s->rdma, ns);
	if (ms_ns_delete(c->s->st, ns, c->s->why, sizeof(c->s->why))) {
		log_err("%s", c->s->why);
		answer_error(c, h->id, MEMSVC_E_IO, false, "%s", c->s->why);
		return;
	}
	log_info("namespace %s deleted (client %s)", name, c->peer);
	if (c->ns == ns)
		c->ns = NULL;
	if (!answer_begin(c, MEMSVC_DELETE_OK, h->id, 0)) {
		c->dead = true;
		return;
	}
	answer_send(c, 0);
}

/* The token's namespaces whose names sort after the one given, the first
 * MEMSVC_LIST_MAX of them in name order. */
static void do_list(struct conn *c, const struct memsvc_hdr *h, const uint8_t *p)
{
	struct memsvc_list_req r;
	struct memsvc_list_ok ok = {0};
	const struct ms_ns *pick[MEMSVC_LIST_MAX + 1];
	char after[MEMSVC_NAME_MAX + 1] = "";
	const uint8_t *token;
	unsigned n = 0;

	if (h->len < sizeof(r)) {
		answer_error(c, h->id, MEMSVC_E_PROTO, true, "LIST of %u bytes", h->len);
		return;
	}
	memcpy(&r, p, sizeof(r));
	if (h->len != sizeof(r) + r.after_len + r.token_len || r.reserved || r.reserved2) {
		answer_error(c, h->id, MEMSVC_E_PROTO, true,
			     "LIST of %u bytes with a %u-byte name and a %u-byte token", h->len,
			     r.after_len, r.token_len);
		return;
	}
	if (r.after_len > MEMSVC_NAME_MAX || !r.token_len) {
		answer_error(c, h->id, MEMSVC_E_INVAL, false,
			     "LIST needs a token and a name of at most %u bytes", MEMSVC_NAME_MAX);
		return;
	}
	memcpy(after, p + sizeof(r), r.after_len);
	token = p + sizeof(r) + r.after_len;
	/* One more than fits, to know whether more follow: the smallest
	 * names above the cursor, by insertion into a short sorted list. */
	for (const struct ms_ns *ns = c->s->st->ns; ns; ns = ns->next) {
		if (ns->deleted || strcmp(ns->name, after) <= 0 ||
		    !ms_ns_token_ok(ns, token, r.token_len))
			continue;
		unsigned i = n < MEMSVC_LIST_MAX + 1 ? n++ : MEMSVC_LIST_MAX + 1;
		while (i > 0 && strcmp(pick[i - 1]->name, ns->name) > 0) {
			if (i < MEMSVC_LIST_MAX + 1)
				pick[i] = pick[i - 1];
			i--;
		}
		if (i < MEMSVC_LIST_MAX + 1)
			pick[i] = ns;
	}
	ok.more = n > MEMSVC_LIST_MAX;
	ok.count = MIN(n, MEMSVC_LIST_MAX);
	uint8_t *a =
	    answer_begin(c, MEMSVC_LIST_OK, h->id,
			 (uint32_t)(sizeof(ok) + ok.count * sizeof(struct memsvc_list_entry)));
	if (!a) {
		c->dead = true;
		return;
	}
	memcpy(a, &ok, sizeof(ok));
	for (unsigned i = 0; i < ok.count; i++) {
		struct memsvc_list_entry e = {.name_len = (uint8_t)strlen(pick[i]->name),
					      .owned =
						  live_owner(c, pick[i]) ||
						  (c->ns == pick[i] && c->epoch == pick[i]->epoch)};
		put_info((uint8_t *)&e.info, pick[i]);
		memcpy(e.name, pick[i]->name, e.name_len);
		memcpy(a + sizeof(ok) + i * sizeof(e), &e, sizeof(e));
	}
	answer_send(c, 0);
}

/* false (answered) unless the connection owns an open namespace now. */
static bool owner_ok(struct conn *c, const struct memsvc_hdr *h)
{
	if (!c->ns) {
		answer_error(c, h->id, MEMSVC_E_INVAL, false,
			     "no namespace is open on this connection");
		return false;
	}
	if (c->ns->deleted) {
		answer_error(c, h->id, MEMSVC_E_NOENT, false, "namespace %s was deleted",
			     c->ns->name);
		return false;
	}
	if (c->epoch < c->ns->epoch) {
		answer_error(c, h->id, MEMSVC_E_STALE, false,
			     "namespace %s was handed over: epoch %llu is newer than yours (%llu)",
			     c->ns->name, (unsigned long long)c->ns->epoch,
			     (unsigned long long)c->epoch);
		return false;
	}
	return true;
}

static void do_info(struct conn *c, const struct memsvc_hdr *h)
{
	uint8_t *a;

	if (h->len != 0) {
		answer_error(c, h->id, MEMSVC_E_PROTO, true, "INFO with a %u-byte payload", h->len);
		return;
	}
	if (!owner_ok(c, h))
		return;
	a = answer_begin(c, MEMSVC_INFO_OK, h->id, sizeof(struct memsvc_info_wire));
	if (!a) {
		c->dead = true;
		return;
	}
	put_info(a, c->ns);
	answer_send(c, 0);
}

/* Checks a READ or WRITE batch; false when answered. */
static bool batch_ok(struct conn *c, const struct memsvc_hdr *h, const uint8_t *p,
		     struct memsvc_batch *b, size_t per_page)
{
	if (h->len < sizeof(*b)) {
		answer_error(c, h->id, MEMSVC_E_PROTO, true, "batch of %u bytes is too short",
			     h->len);
		return false;
	}
	memcpy(b, p, sizeof(*b));
	if (b->n > MEMSVC_MAX_BATCH) {
		answer_error(c, h->id, MEMSVC_E_2BIG, false,
			     "batch of %u pages: at most %u in one request", b->n,
			     MEMSVC_MAX_BATCH);
		return false;
	}
	if (h->len != sizeof(*b) + (size_t)b->n * per_page) {
		answer_error(c, h->id, MEMSVC_E_PROTO, true,
			     "batch of %u pages in %u bytes, %zu expected", b->n, h->len,
			     sizeof(*b) + (size_t)b->n * per_page);
		return false;
	}
	if (!owner_ok(c, h))
		return false;
	for (uint32_t i = 0; i < b->n; i++) {
		uint64_t gfn;
		memcpy(&gfn, p + sizeof(*b) + i * 8, 8);
		if (gfn >= c->ns->nr_pages) {
			answer_error(c, h->id, MEMSVC_E_RANGE, false,
				     "page %llu is out of range: namespace %s has %llu pages",
				     (unsigned long long)gfn, c->ns->name,
				     (unsigned long long)c->ns->nr_pages);
			return false;
		}
	}
	return true;
}

static void do_read(struct conn *c, const struct memsvc_hdr *h, const uint8_t *p)
{
	struct memsvc_batch b;
	uint32_t present = 0, fsz;
	uint8_t *a, *data;

	if (!batch_ok(c, h, p, &b, 8))
		return;
	const uint8_t *gp = p + sizeof(b);
	for (uint32_t i = 0; i < b.n; i++) {
		uint64_t gfn;
		memcpy(&gfn, gp + i * 8, 8);
		present += ms_ns_present(c->ns, gfn);
	}
	fsz = memsvc_flags_size(b.n);
	a = answer_begin(c, MEMSVC_READ_OK, h->id,
			 (uint32_t)(sizeof(b) + fsz + (size_t)present * MEMSVC_PAGE));
	if (!a) {
		c->dead = true;
		return;
	}
	memcpy(a, &b, sizeof(b));
	memset(a + sizeof(b), 0, fsz);
	data = a + sizeof(b) + fsz;
	/* A copy, not the mapping itself: a later write cannot change an
	 * answer whose CRC is already made. */
	for (uint32_t i = 0; i < b.n; i++) {
		uint64_t gfn;
		memcpy(&gfn, gp + i * 8, 8);
		if (!ms_ns_present(c->ns, gfn)) {
			a[sizeof(b) + i] = MEMSVC_PAGE_ZERO;
			continue;
		}
		memcpy(data, c->ns->pages + gfn * MEMSVC_PAGE, MEMSVC_PAGE);
		data += MEMSVC_PAGE;
	}
	answer_send(c, 0);
}

static void do_write(struct conn *c, const struct memsvc_hdr *h, const uint8_t *p)
{
	struct memsvc_batch b;
	uint64_t gfn[MEMSVC_MAX_BATCH];
	int e;

	if (!batch_ok(c, h, p, &b, 8 + MEMSVC_PAGE))
		return;
	memcpy(gfn, p + sizeof(b), (size_t)b.n * 8);
	e = ms_ns_write(c->s->st, c->ns, gfn, b.n, p + sizeof(b) + (size_t)b.n * 8, c->s->why,
			sizeof(c->s->why));
	if (e) {
		if (e == -EIO)
			log_err("%s", c->s->why);
		answer_error(c, h->id, errno_code(e), false, "%s", c->s->why);
		return;
	}
	if (!answer_begin(c, MEMSVC_WRITE_OK, h->id, 0)) {
		c->dead = true;
		return;
	}
	answer_send(c, 0);
}

static void do_rdma_info(struct conn *c, const struct memsvc_hdr *h)
{
	struct memsvc_rdma_info_wire w;
	uint8_t *a;
	int e;

	if (h->len != 0) {
		answer_error(c, h->id, MEMSVC_E_PROTO, true, "RDMA_INFO with a %u-byte payload",
			     h->len);
		return;
	}
	if (!owner_ok(c, h))
		return;
	if (!c->s->rdma) {
		answer_error(c, h->id, MEMSVC_E_NOTSUP, false,
			     "this service has no RDMA listener (start it with --rdma)");
		return;
	}
	e = ms_rdma_info(c->s->rdma, c->ns, &w, c->s->why, sizeof(c->s->why));
	if (e) {
		log_warn("client %s: %s", c->peer, c->s->why);
		answer_error(c, h->id, errno_code(e), false, "%s", c->s->why);
		return;
	}
	a = answer_begin(c, MEMSVC_RDMA_INFO_OK, h->id, sizeof(w));
	if (!a) {
		c->dead = true;
		return;
	}
	memcpy(a, &w, sizeof(w));
	answer_send(c, 0);
}

static void do_rdma_commit(struct conn *c, const struct memsvc_hdr *h, const uint8_t *p)
{
	struct memsvc_batch b;
	uint64_t gfn[MEMSVC_MAX_BATCH];
	int e;

	if (!batch_ok(c, h, p, &b, 8))
		return;
	/* without a listener nothing can have been written one-sided: a
	 * commit would only mark zero pages as stored */
	if (!c->s->rdma) {
		answer_error(c, h->id, MEMSVC_E_NOTSUP, false,
			     "this service has no RDMA listener (start it with --rdma)");
		return;
	}
	memcpy(gfn, p + sizeof(b), (size_t)b.n * 8);
	e = ms_ns_commit(c->s->st, c->ns, gfn, b.n, c->s->why, sizeof(c->s->why));
	if (e) {
		if (e == -EIO)
			log_err("%s", c->s->why);
		answer_error(c, h->id, errno_code(e), false, "%s", c->s->why);
		return;
	}
	if (!answer_begin(c, MEMSVC_RDMA_COMMIT_OK, h->id, 0)) {
		c->dead = true;
		return;
	}
	answer_send(c, 0);
}

/* The header alone: false (answered, closing) if it cannot be trusted. */
static bool hdr_ok(struct conn *c, const struct memsvc_hdr *h)
{
	if (h->magic != MEMSVC_MAGIC) {
		answer_error(c, 0, MEMSVC_E_PROTO, true, "not a memsvc record (magic %08x)",
			     h->magic);
		return false;
	}
	if (h->version != MEMSVC_VERSION) {
		answer_error(c, h->id, MEMSVC_E_PROTO, true,
			     "record of protocol version %u, this service speaks %u", h->version,
			     MEMSVC_VERSION);
		return false;
	}
	if (h->len > MEMSVC_MAX_PAYLOAD) {
		answer_error(c, h->id, MEMSVC_E_PROTO, true,
			     "record of %u bytes, at most %u are allowed", h->len,
			     MEMSVC_MAX_PAYLOAD);
		return false;
	}
	if (h->flags || h->reserved) {
		answer_error(c, h->id, MEMSVC_E_PROTO, true,
			     "record with flags %#x, reserved %#x set", h->flags, h->reserved);
		return false;
	}
	return true;
}

static void handle(struct conn *c, const struct memsvc_hdr *h, const uint8_t *p)
{
	if (!c->hello && h->type != MEMSVC_HELLO) {
		answer_error(c, h->id, MEMSVC_E_PROTO, true, "the first record must be HELLO");
		return;
	}
	switch (h->type) {
	case MEMSVC_HELLO:
		do_hello(c, h, p);
		break;
	case MEMSVC_CREATE:
		do_create(c, h, p);
		break;
	case MEMSVC_OPEN:
		do_open(c, h, p);
		break;
	case MEMSVC_INFO:
		do_info(c, h);
		break;
	case MEMSVC_READ:
		do_read(c, h, p);
		break;
	case MEMSVC_WRITE:
		do_write(c, h, p);
		break;
	case MEMSVC_RDMA_INFO:
		do_rdma_info(c, h);
		break;
	case MEMSVC_RDMA_COMMIT:
		do_rdma_commit(c, h, p);
		break;
	case MEMSVC_DELETE:
		do_delete(c, h, p);
		break;
	case MEMSVC_LIST:
		do_list(c, h, p);
		break;
	default:
		answer_error(c, h->id, MEMSVC_E_PROTO, true, "unknown record type %#x", h->type);
	}
}

/* ---- connection I/O ---- */

static void conn_recv(struct conn *c)
{
	struct io_uring_sqe *sqe;

	if (c->in_off && c->in_off + c->in_len + MEMSVC_HDR_SIZE > c->in_cap) {
		memmove(c->in, c->in + c->in_off, c->in_len);
		c->in_off = 0;
	}
	sqe = loop_sqe(&c->s->loop, &c->op);
	if (!sqe) {
		c->dead = true;
		return;
	}
	io_uring_prep_recv(sqe, c->fd, c->in + c->in_off + c->in_len,
			   c->in_cap - c->in_off - c->in_len, 0);
}

static void conn_send(struct conn *c)
{
	struct io_uring_sqe *sqe = loop_sqe(&c->s->loop, &c->op);

	if (!sqe) {
		c->dead = true;
		return;
	}
	c->sending = true;
	io_uring_prep_send(sqe, c->fd, c->out + c->out_sent, c->out_len - c->out_sent,
			   MSG_NOSIGNAL);
}

/* Handles every whole record buffered, one answer at a time; then
 * receives more, unless an answer is on its way. */
static void conn_process(struct conn *c)
{
	while (!c->dead && !c->sending && !c->closing && c->in_len >= MEMSVC_HDR_SIZE) {
		struct memsvc_hdr h;
		uint8_t *rec = c->in + c->in_off;

		memcpy(&h, rec, sizeof(h));
		if (!hdr_ok(c, &h))
			break;
		size_t need = MEMSVC_HDR_SIZE + h.len;
		if (c->in_len < need) {
			if (c->in_cap - c->in_off < need) {
				/* grow to hold the whole record, which hdr_ok
				 * bounded */
				memmove(c->in, rec, c->in_len);
				c->in_off = 0;
				if (c->in_cap < need) {
					uint8_t *n = realloc(c->in, need);
					if (!n) {
						c->dead = true;
						break;
					}
					c->in = n;
					c->in_cap = need;
				}
			}
			break;
		}
		if (h.crc != crc32c(memsvc_hdr_crc(&h), rec + MEMSVC_HDR_SIZE, h.len)) {
			answer_error(c, h.id, MEMSVC_E_PROTO, true, "record %u: CRC mismatch",
				     h.id);
			break;
		}
		handle(c, &h, rec + MEMSVC_HDR_SIZE);
		c->in_off += need;
		c->in_len -= need;
		if (!c->in_len)
			c->in_off = 0;
	}
	if (c->closing && !c->sending)
		c->dead = true;
	if (!c->dead && !c->sending && !c->closing)
		conn_recv(c);
}

static void on_conn(struct loop *l, struct loop_op *op, const struct io_uring_cqe *cqe)
{
	struct conn *c = (struct conn *)op;

	(void)l;
	if (c->dead)
		return;
	if (c->sending) {
		if (cqe->res <= 0) {
			log_debug("client %s: send: %s", c->peer,
				  cqe->res ? strerror(-cqe->res) : "closed");
			c->dead = true;
			return;
		}
		c->out_sent += (size_t)cqe->res;
		if (c->out_sent < c->out_len) {
			conn_send(c);
			return;
		}
		c->sending = false;
		conn_process(c);
		return;
	}
	if (cqe->res <= 0) {
		if (c->in_len)
			log_info("client %s left in the middle of a record (%zu bytes)", c->peer,
				 c->in_len);
		else
			log_debug("client %s: %s", c->peer,
				  cqe->res ? strerror(-cqe->res) : "closed");
		c->dead = true;
		return;
	}
	c->in_len += (size_t)cqe->res;
	conn_process(c);
}

static void peer_name(int fd, char *buf, size_t len)
{
	struct sockaddr_storage a;
	socklen_t al = sizeof(a);
	char host[INET6_ADDRSTRLEN] = "?", port[8] = "?";

	if (!getpeername(fd, (struct sockaddr *)&a, &al))
		getnameinfo((struct sockaddr *)&a, al, host, sizeof(host), port, sizeof(port),
			    NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(buf, len, "%s:%s", host, port);
}

static void accept_arm(struct memsvc_server *s)
{
	struct io_uring_sqe *sqe = loop_sqe(&s->loop, &s->accept_op);

	if (sqe)
		io_uring_prep_accept(sqe, s->lfd, NULL, NULL, SOCK_CLOEXEC);
}

static void on_accept(struct loop *l, struct loop_op *op, const struct io_uring_cqe *cqe)
{
	struct memsvc_server *s = (struct memsvc_server *)l->opaque;
	int fd = cqe->res, one = 1;
	struct conn *c;

	(void)op;
	if (fd < 0) {
		if (fd == -ECANCELED)
			return;
		/* out of descriptors, say: try again at the next tick */
		log_warn("accept: %s", strerror(-fd));
		return;
	}
	accept_arm(s);
	if (s->nr_conns >= MAX_CONNS) {
		log_warn("%u clients already: refusing one more", s->nr_conns);
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c)
		c->in = malloc(IN_START);
	if (!c || !c->in) {
		if (c)
			free(c);
		close(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->op.cb = on_conn;
	c->s = s;
	c->fd = fd;
	c->in_cap = IN_START;
	peer_name(fd, c->peer, sizeof(c->peer));
	c->next = s->conns;
	s->conns = c;
	s->nr_conns++;
	log_debug("client %s connected", c->peer);
	conn_recv(c);
}

static void on_stop(struct loop *l, struct loop_op *op, const struct io_uring_cqe *cqe)
{
	(void)op;
	if (cqe->res != -ECANCELED)
		loop_stop(l);
}

static void on_tick(struct loop *l, struct loop_op *op, const struct io_uring_cqe *cqe)
{
	struct memsvc_server *s = (struct memsvc_server *)l->opaque;
	uint64_t now = now_ns();

	(void)op;
	if (cqe->res == -ECANCELED)
		return;
	for (struct conn *c = s->conns; c; c = c->next) {
		if (c->sending && !c->dead && now - c->send_start_ns > s->send_timeout_ns) {
			log_warn("client %s has not taken its answer for %d ms: dropping it",
				 c->peer, s->o.send_timeout_ms);
			c->dead = true;
		}
	}
	if (!s->accept_op.inflight)
		accept_arm(s);
	if (s->rdma)
		ms_rdma_tick(s->rdma);
	loop_timer(l, &s->tick_op, &s->tick);
}

static void on_rdma(struct loop *l, struct loop_op *op, const struct io_uring_cqe *cqe)
{
	struct memsvc_server *s = (struct memsvc_server *)l->opaque;

	(void)op;
	if (cqe->res == -ECANCELED)
		return;
	ms_rdma_events(s->rdma);
	loop_poll(l, &s->rdma_op, ms_rdma_fd(s->rdma), POLLIN);
}

/* Before the loop sleeps: ends the pending op of a dropped connection and
 * frees those with nothing in flight. */
static void reap(struct loop *l, void *opaque)
{
	struct memsvc_server *s = opaque;

	(void)l;
	for (struct conn **pc = &s->conns; *pc;) {
		struct conn *c = *pc;
		if (!c->dead) {
			pc = &c->next;
			continue;
		}
		if (c->op.inflight) {
			if (!c->shut)
				shutdown(c->fd, SHUT_RDWR);
			c->shut = true;
			pc = &c->next;
			continue;
		}
		*pc = c->next;
		s->nr_conns--;
		log_debug("client %s gone", c->peer);
		close(c->fd);
		free(c->in);
		free(c->out);
		free(c);
	}
}

/* ---- life cycle ---- */

static int listen_on(struct memsvc_server *s, char *why, size_t whylen)
{
	char host[256], port[8];
	uint16_t p;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
	int one = 1, r;

	if (memsvc_parse_listen(s->o.listen, host, sizeof(host), &p)) {
		snprintf(why, whylen, "--listen %s: an address is HOST:PORT", s->o.listen);
		return -EINVAL;
	}
	snprintf(port, sizeof(port), "%u", p);
	r = getaddrinfo(host, port, &hints, &res);
	if (r) {
		snprintf(why, whylen, "--listen %s: %s", s->o.listen, gai_strerror(r));
		return -EINVAL;
	}
	s->lfd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	r = s->lfd < 0 || setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* A service killed a moment ago still holds its listening socket
	 * until the kernel has torn its io_uring down (asynchronously): give
	 * that 2 s before calling the address taken. */
	for (int tries = 0; !r && bind(s->lfd, res->ai_addr, res->ai_addrlen); tries++) {
		if (errno != EADDRINUSE || tries == 100) {
			r = 1;
			break;
		}
		usleep(20000);
	}
	if (r || listen(s->lfd, 128)) {
		r = -errno;
		snprintf(why, whylen, "%s: %s", s->o.listen, strerror(errno));
		freeaddrinfo(res);
		return r;
	}
	freeaddrinfo(res);
	struct sockaddr_storage a;
	socklen_t al = sizeof(a);
	char h[INET6_ADDRSTRLEN] = "?", sp[8] = "?";
	if (!getsockname(s->lfd, (struct sockaddr *)&a, &al))
		getnameinfo((struct sockaddr *)&a, al, h, sizeof(h), sp, sizeof(sp),
			    NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(s->addr, sizeof(s->addr), strchr(h, ':') ? "[%s]:%s" : "%s:%s", h, sp);
	return 0;
}

int memsvc_server_create(const struct memsvc_server_opts *o, struct memsvc_server **out, char *why,
			 size_t whylen)
{
	struct memsvc_server *s = calloc(1, sizeof(*s));
	int r;

	if (!s) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	s->o = *o;
	s->lfd = -1;
	if (!s->o.send_timeout_ms)
		s->o.send_timeout_ms = 10000;
	s->send_timeout_ns = (uint64_t)s->o.send_timeout_ms * 1000000;
	r = ms_store_open(o->dir, o->sync, o->max_mem, &s->st, why, whylen);
	if (r)
		goto fail;
	r = listen_on(s, why, whylen);
	if (r)
		goto fail;
	if (o->rdma) {
		r = ms_rdma_open(o->rdma, &s->rdma, why, whylen);
		if (r)
			goto fail;
	}
	r = loop_init(&s->loop, 256);
	if (r) {
		snprintf(why, whylen, "io_uring: %s", strerror(-r));
		goto fail;
	}
	s->loop_ok = true;
	*out = s;
	return 0;
fail:
	memsvc_server_destroy(s);
	return r;
}

const char *memsvc_server_addr(const struct memsvc_server *s)
{
	return s->addr;
}

int memsvc_server_run(struct memsvc_server *s, int stop_fd)
{
	int r;

	s->loop.opaque = s;
	s->loop.before_sleep = reap;
	s->accept_op.cb = on_accept;
	s->stop_op.cb = on_stop;
	s->tick_op.cb = on_tick;
	s->tick.tv_sec = 1;
	accept_arm(s);
	loop_poll(&s->loop, &s->stop_op, stop_fd, POLLIN);
	loop_timer(&s->loop, &s->tick_op, &s->tick);
	s->rdma_op.cb = on_rdma;
	if (s->rdma)
		loop_poll(&s->loop, &s->rdma_op, ms_rdma_fd(s->rdma), POLLIN);
	r = loop_submit(&s->loop);
	if (r < 0) {
		log_err("io_uring submit: %s", strerror(-r));
		return r;
	}
	if (s->rdma)
		log_info("RDMA on %s", ms_rdma_addr(s->rdma));
	log_info("listening on %s (%s%s)", s->addr, s->st->dir ? "pages in " : "pages in memory",
		 s->st->dir ? s->st->dir : "");
	r = loop_run(&s->loop);
	if (r)
		log_err("loop: %s", strerror(-r));
	/* Nothing the kernel may still write into is freed before its CQE. */
	for (struct conn *c = s->conns; c; c = c->next)
		c->dead = true;
	reap(&s->loop, s);
	for (struct conn *c = s->conns; c; c = c->next)
		loop_drain(&s->loop, &c->op, 1000000000);
	reap(&s->loop, s);
	loop_cancel(&s->loop, &s->accept_op);
	loop_cancel(&s->loop, &s->tick_op);
	loop_cancel(&s->loop, &s->stop_op);
	if (s->rdma) {
		loop_cancel(&s->loop, &s->rdma_op);
		loop_drain(&s->loop, &s->rdma_op, 1000000000);
	}
	loop_drain(&s->loop, &s->accept_op, 1000000000);
	loop_drain(&s->loop, &s->tick_op, 1000000000);
	loop_drain(&s->loop, &s->stop_op, 1000000000);
	return r;
}

void memsvc_server_destroy(struct memsvc_server *s)
{
	if (!s)
		return;
	while (s->conns) {
		struct conn *c = s->conns;
		s->conns = c->next;
		close(c->fd);
		free(c->in);
		free(c->out);
		free(c);
	}
	if (s->loop_ok)
		loop_fini(&s->loop);
	if (s->lfd >= 0)
		close(s->lfd);
	/* before the store: the regions cover its mappings */
	ms_rdma_close(s->rdma);
	ms_store_close(s->st);
	free(s);
}
