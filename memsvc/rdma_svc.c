// SPDX-License-Identifier: MIT
#include "rdma_svc.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <netdb.h>
#include <rdma/rdma_cma.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "memsvc/rdma.h"
#include "memsvc/server.h"

#define FENCE_GRACE_NS (5ull * 1000000000) /* fenced QPs live this long, memory-less */

/* One namespace owner epoch's view of the pages. */
struct reg {
	struct ms_ns *ns;
	uint64_t epoch;
	uint64_t cookie;
	struct ibv_pd *pd;
	struct ibv_mr *mr;  /* NULL once fenced */
	uint64_t fenced_ns; /* when it was fenced, 0 before */
	unsigned qps;	    /* QPs created in pd and not destroyed yet */
	struct reg *next;
};

/* One client QP (the cm id's context points here). */
struct rconn {
	struct rdma_cm_id *id;
	struct reg *reg;
	bool has_qp, disconnecting;
	struct rconn *next;
};

struct ms_rdma {
	struct rdma_event_channel *ch;
	struct rdma_cm_id *listen;
	struct ibv_context **devs; /* rdma_get_devices */
	struct ibv_context *ctx;   /* the device regions live on */
	struct ibv_cq *cq;	   /* every QP's; one-sided only, nothing ever completes */
	int rd_atom;		   /* incoming RDMA READs a QP may have outstanding */
	char host[64];		   /* as given; "" when a wildcard */
	uint16_t port;
	char addr[96];
	struct reg *regs;
	struct rconn *conns;
};

const char *ms_rdma_addr(const struct ms_rdma *r)
{
	return r->addr;
}

int ms_rdma_fd(const struct ms_rdma *r)
{
	return r->ch->fd;
}

static void reg_put(struct ms_rdma *r, struct reg *g)
{
	if (g->mr || g->qps)
		return;
	for (struct reg **p = &r->regs; *p; p = &(*p)->next)
		if (*p == g) {
			*p = g->next;
			break;
		}
	ibv_dealloc_pd(g->pd);
	free(g);
}

static void conn_drop_qp(struct ms_rdma *r, struct rconn *c)
{
	if (!c->has_qp)
		return;
	rdma_destroy_qp(c->id);
	c->has_qp = false;
	c->reg->qps--;
	reg_put(r, c->reg);
}

static void conn_free(struct ms_rdma *r, struct rconn *c)
{
	conn_drop_qp(r, c);
	for (struct rconn **p = &r->conns; *p; p = &(*p)->next)
		if (*p == c) {
			*p = c->next;
			break;
		}
	rdma_destroy_id(c->id);
	free(c);
}

int ms_rdma_open(const char *listen, struct ms_rdma **out, char *why, size_t whylen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
	struct ibv_device_attr attr;
	struct ms_rdma *r;
	char host[64], port[8];
	uint16_t p;
	int n = 0, e;

	if (memsvc_parse_listen(listen, host, sizeof(host), &p)) {
		snprintf(why, whylen, "--rdma %s: an address is HOST:PORT", listen);
		return -EINVAL;
	}
	/* the TCP default port is what the parser fills in: RDMA has its own */
	if (!strstr(listen, "]:") && (listen[0] == '[' || !strchr(listen, ':')))
		p = MEMSVC_DEFAULT_RDMA_PORT;
	/* checked first, so a machine without RDMA says exactly that */
	e = memsvc_rdma_probe(why, whylen);
	if (e) {
		char tmp[256];
		snprintf(tmp, sizeof(tmp), "%s", why);
		snprintf(why, whylen, "--rdma %s: %s", listen, tmp);
		return e;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	r->ch = rdma_create_event_channel();
	if (!r->ch) {
		snprintf(why, whylen, "--rdma %s: no rdma_cm on this machine (%s)", listen,
			 strerror(errno));
		e = -ENODEV;
		goto fail;
	}
	fcntl(r->ch->fd, F_SETFL, fcntl(r->ch->fd, F_GETFL) | O_NONBLOCK);
	if (rdma_create_id(r->ch, &r->listen, NULL, RDMA_PS_TCP)) {
		e = -errno;
		snprintf(why, whylen, "--rdma %s: rdma_create_id: %s", listen, strerror(errno));
		goto fail;
	}
	snprintf(port, sizeof(port), "%u", p);
	e = getaddrinfo(host, port, &hints, &res);
	if (e) {
		snprintf(why, whylen, "--rdma %s: %s", listen, gai_strerror(e));
		e = -EINVAL;
		goto fail;
	}
	if (rdma_bind_addr(r->listen, res->ai_addr) || rdma_listen(r->listen, 64)) {
		e = -errno;
		snprintf(why, whylen, "--rdma %s: %s", listen, strerror(errno));
		goto fail;
	}
	r->port = be16toh(rdma_get_src_port(r->listen));
	if (strcmp(host, "0.0.0.0") && strcmp(host, "::"))
		snprintf(r->host, sizeof(r->host), "%s", host);
	snprintf(r->addr, sizeof(r->addr), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, r->port);
	/* A listener bound to one address is on that address's device; a
	 * wildcard one takes the first device, the only one served. */
	r->devs = rdma_get_devices(&n);
	r->ctx = r->listen->verbs ? r->listen->verbs : (r->devs && n > 0 ? r->devs[0] : NULL);
	if (!r->ctx) {
		snprintf(why, whylen,
			 "--rdma %s: no RDMA device on this machine (rdma_cm found none)", listen);
		e = -ENODEV;
		goto fail;
	}
	if (!r->listen->verbs && n > 1)
		log_warn("--rdma %s: %d RDMA devices, only %s is served (bind to its address to "
			 "choose)",
			 listen, n, ibv_get_device_name(r->ctx->device));
	if (ibv_query_device(r->ctx, &attr)) {
		e = -EIO;
		snprintf(why, whylen, "--rdma %s: querying %s failed", listen,
			 ibv_get_device_name(r->ctx->device));
		goto fail;
	}
	r->rd_atom = MIN(attr.max_qp_rd_atom, 16);
	r->cq = ibv_create_cq(r->ctx, 16, NULL, NULL, 0);
	if (!r->cq) {
		e = -errno;
		snprintf(why, whylen, "--rdma %s: ibv_create_cq: %s", listen, strerror(errno));
		goto fail;
	}
	freeaddrinfo(res);
	log_info("RDMA listener on %s (device %s)", r->addr, ibv_get_device_name(r->ctx->device));
	*out = r;
	return 0;
fail:
	if (res)
		freeaddrinfo(res);
	ms_rdma_close(r);
	return e ? e : -EIO;
}

static struct reg *reg_find(struct ms_rdma *r, const struct ms_ns *ns, uint64_t epoch)
{
	for (struct reg *g = r->regs; g; g = g->next)
		if (g->ns == ns && g->epoch == epoch && g->mr)
			return g;
	return NULL;
}

int ms_rdma_info(struct ms_rdma *r, struct ms_ns *ns, struct memsvc_rdma_info_wire *out, char *why,
		 size_t whylen)
{
	struct reg *g = reg_find(r, ns, ns->epoch);
	size_t len = ns->nr_pages * MEMSVC_PAGE;
	char sz[32];

	if (!g) {
		g = calloc(1, sizeof(*g));
		if (!g) {
			snprintf(why, whylen, "out of memory");
			return -ENOMEM;
		}
		g->ns = ns;
		g->epoch = ns->epoch;
		if (getrandom(&g->cookie, sizeof(g->cookie), 0) != sizeof(g->cookie)) {
			free(g);
			snprintf(why, whylen, "getrandom: %s", strerror(errno));
			return -EIO;
		}
		g->pd = ibv_alloc_pd(r->ctx);
		/* The whole namespace: the NIC pins it (ibv_reg_mr faults every
		 * page in), so a namespace costs its full size once registered. */
		if (g->pd)
			g->mr = ibv_reg_mr(g->pd, ns->pages, len,
					   IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ |
					       IBV_ACCESS_REMOTE_WRITE);
		if (!g->mr) {
			int e = errno;
			snprintf(why, whylen,
				 "namespace %s: registering its %s for RDMA failed: %s (pages in "
				 "--dir files cannot be pinned by every kernel)",
				 ns->name, fmt_size(len, sz, sizeof(sz)), strerror(e));
			if (g->pd)
				ibv_dealloc_pd(g->pd);
			free(g);
			return e == ENOMEM ? -ENOMEM : -EOPNOTSUPP;
		}
		g->next = r->regs;
		r->regs = g;
		log_info("namespace %s: epoch %llu registered for RDMA (%s, rkey %#x)", ns->name,
			 (unsigned long long)g->epoch, fmt_size(len, sz, sizeof(sz)), g->mr->rkey);
	}
	memset(out, 0, sizeof(*out));
	out->epoch = g->epoch;
	out->addr = (uint64_t)(uintptr_t)ns->pages;
	out->length = len;
	out->cookie = g->cookie;
	out->rkey = g->mr->rkey;
	out->cm_port = r->port;
	out->cm_host_len = (uint8_t)strlen(r->host);
	memcpy(out->cm_host, r->host, out->cm_host_len);
	return 0;
}

void ms_rdma_fence(struct ms_rdma *r, const struct ms_ns *ns)
{
	for (struct reg *g = r->regs, *next; g; g = next) {
		next = g->next;
		if (g->ns != ns || g->epoch >= ns->epoch || !g->mr)
			continue;
		/* From here the old rkey names nothing, and the QPs of that
		 * epoch sit in a PD without memory: the NIC refuses them. */
		if (ibv_dereg_mr(g->mr)) {
			/* the region may still answer: take the QPs down now */
			log_err("namespace %s: deregistering epoch %llu: %s", ns->name,
				(unsigned long long)g->epoch, strerror(errno));
			for (struct rconn *c = r->conns; c; c = c->next)
				if (c->reg == g)
					conn_drop_qp(r, c);
		}
		g->mr = NULL;
		g->fenced_ns = now_ns();
		log_info("namespace %s: RDMA access of epoch %llu revoked (%u QPs)", ns->name,
			 (unsigned long long)g->epoch, g->qps);
		reg_put(r, g);
	}
}

void ms_rdma_tick(struct ms_rdma *r)
{
	uint64_t now = now_ns();

	for (struct rconn *c = r->conns; c; c = c->next) {
		if (!c->has_qp || c->disconnecting || !c->reg->fenced_ns ||
		    now - c->reg->fenced_ns < FENCE_GRACE_NS)
			continue;
		c->disconnecting = true;
		rdma_disconnect(c->id);
	}
}

static void on_connect_request(struct ms_rdma *r, struct rdma_cm_id *id, const void *priv,
			       uint8_t priv_len, uint8_t reads_wanted)
{
	struct memsvc_rdma_cm_data d = {0};
	struct ibv_qp_init_attr qa = {0};
	struct rdma_conn_param cp = {0};
	struct rconn *c = NULL;
	struct reg *g = NULL;
	const char *refuse = NULL;

	if (priv_len >= sizeof(d))
		memcpy(&d, priv, sizeof(d));
	for (struct reg *i = r->regs; i && priv_len >= sizeof(d); i = i->next)
		if (i->cookie == d.cookie && i->epoch == d.epoch)
			g = i;
	if (!g)
		refuse = "an unknown cookie";
	else if (!g->mr || g->epoch != g->ns->epoch)
		refuse = "a handed-over epoch";
	else if (id->verbs != r->ctx)
		refuse = "another device";
	if (refuse) {
		log_info("RDMA connect with %s refused", refuse);
		goto reject;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		goto reject;
	qa.send_cq = qa.recv_cq = r->cq;
	qa.qp_type = IBV_QPT_RC;
	qa.cap.max_send_wr = qa.cap.max_recv_wr = 1;
	qa.cap.max_send_sge = qa.cap.max_recv_sge = 1;
	if (rdma_create_qp(id, g->pd, &qa)) {
		log_warn("RDMA QP for namespace %s: %s", g->ns->name, strerror(errno));
		goto reject;
	}
	c->id = id;
	c->reg = g;
	c->has_qp = true;
	g->qps++;
	id->context = c;
	/* incoming READs need responder resources; the service reads nothing */
	cp.responder_resources = (uint8_t)MIN(reads_wanted, r->rd_atom);
	cp.initiator_depth = 0;
	cp.rnr_retry_count = 7;
	if (rdma_accept(id, &cp)) {
		log_warn("RDMA accept for namespace %s: %s", g->ns->name, strerror(errno));
		c->next = r->conns;
		r->conns = c;
		conn_free(r, c);
		return;
	}
	c->next = r->conns;
	r->conns = c;
	log_debug("RDMA QP for namespace %s epoch %llu", g->ns->name, (unsigned long long)g->epoch);
	return;
reject:
	free(c);
	rdma_reject(id, NULL, 0);
	rdma_destroy_id(id);
}

void ms_rdma_events(struct ms_rdma *r)
{
	struct rdma_cm_event *ev;

	while (!rdma_get_cm_event(r->ch, &ev)) {
		struct rdma_cm_event e = *ev;
		uint8_t priv[64] = {0}, priv_len = 0;

		if (e.event == RDMA_CM_EVENT_CONNECT_REQUEST && e.param.conn.private_data) {
			priv_len = MIN(e.param.conn.private_data_len, sizeof(priv));
			memcpy(priv, e.param.conn.private_data, priv_len);
		}
		/* acked before any id is destroyed: destroy waits for its events */
		rdma_ack_cm_event(ev);
		struct rconn *c = e.id->context;
		switch (e.event) {
		case RDMA_CM_EVENT_CONNECT_REQUEST:
			/* the event speaks from the service's side: its
			 * responder_resources are the client's READ depth */
			on_connect_request(r, e.id, priv, priv_len,
					   e.param.conn.responder_resources);
			break;
		case RDMA_CM_EVENT_ESTABLISHED:
			break;
		case RDMA_CM_EVENT_DISCONNECTED:
		case RDMA_CM_EVENT_CONNECT_ERROR:
		case RDMA_CM_EVENT_UNREACHABLE:
		case RDMA_CM_EVENT_REJECTED:
			if (c && e.id != r->listen) {
				if (e.event == RDMA_CM_EVENT_DISCONNECTED && !c->disconnecting)
					rdma_disconnect(e.id);
				conn_free(r, c);
			}
			break;
		case RDMA_CM_EVENT_DEVICE_REMOVAL:
			log_err("RDMA device removed: RDMA clients fail from now on");
			break;
		default:
			log_debug("rdma_cm event %s", rdma_event_str(e.event));
		}
	}
}

void ms_rdma_close(struct ms_rdma *r)
{
	if (!r)
		return;
	while (r->conns)
		conn_free(r, r->conns);
	while (r->regs) {
		struct reg *g = r->regs;
		r->regs = g->next;
		if (g->mr)
			ibv_dereg_mr(g->mr);
		ibv_dealloc_pd(g->pd);
		free(g);
	}
	if (r->cq)
		ibv_destroy_cq(r->cq);
	if (r->listen)
		rdma_destroy_id(r->listen);
	if (r->devs)
		rdma_free_devices(r->devs);
	if (r->ch)
		rdma_destroy_event_channel(r->ch);
	free(r);
}
