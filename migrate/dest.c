// SPDX-License-Identifier: MIT
/*
 * The destination side of a migration: one receiver thread per data channel
 * writes pages straight into guest RAM; the calling thread serves the
 * control channel, restores the state and resumes the guest.
 *
 * Post-copy: after the switch, guest RAM that has not arrived is registered
 * with userfaultfd (postcopy/uffd.h). The receivers then place pushed pages
 * through it, the fault thread asks the source for faulted pages on the
 * control connection, and the calling thread places the answers, until
 * every page is there.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/bitmap.h"
#include "common/log.h"
#include "common/util.h"
#include "conn.h"
#include "handshake.h"
#include "migrate.h"
#include "postcopy/uffd.h"
#include "transport/transport.h"
#include "vmm/dirty.h"
#include "vmm/hv.h"
#include "vmm/remote.h"
#include "vmm/vm.h"

#define CHUNK_PAGES 512

struct dst;

struct receiver {
	struct dst *d;
	unsigned k; /* 0-based data channel */
	struct mig_conn conn;
	pthread_t thread;
	bool started;
	uint64_t pages, zero_pages;
	uint32_t mark; /* last round whose MARK came in (under d->lock) */
	bool ended;
	int err;
	uint64_t pages0, zero_pages0; /* the counts when this connection came */
	bool fatal;		      /* failed here (placing a page), not on the connection */
	uint8_t *buf;		      /* post-copy: pages land here before they are placed */
};

struct dst {
	struct vm *vm;
	const struct mig_dest_params *p;
	uint64_t nr_pages;
	uint64_t *touched; /* pages written here; each receiver owns its chunks */
	uint64_t *zeroed;  /* pages that arrived as zero (the same owners) */
	unsigned n;
	struct receiver rcv[MIG_MAX_CHANNELS];
	volatile int abort;
	int ctl_fd;
	pthread_mutex_t lock; /* receivers' marks and exits */
	pthread_cond_t cond;
	/* post-copy */
	bool postcopy;		   /* the source said so before COMPLETE */
	uint64_t *discard;	   /* hybrid: pages held stale, dropped at the switch */
	struct uffd *uffd;	   /* set once RAM is registered (atomic) */
	struct mig_conn *ctl;	   /* the control connection, */
	pthread_mutex_t send_lock; /* whose sends this serializes */
	bool ctl_down;		   /* post-copy broke: no sends (under send_lock) */
	bool push_yields;	   /* post-copy: the push gives way every PUSH_PIECE pages */
	int lfd;		   /* the listener: a recovery connects there */
	struct mig_hello hello;	   /* the first control connection's */
	uint32_t recoveries;
	uint64_t rx_before; /* bytes received on connections since closed */
	/* memsvc: the namespace, the hot pages to read first, and the remote
	 * memory once the namespace is ours */
	bool memsvc;
	char memsvc_url[MIG_MEMSVC_URL_MAX];
	uint64_t *hot;
	uint32_t nr_hot;
	struct remote_mem *remote;
	const struct transport_ops *rx_ops; /* how data channels receive */
};

/* Measured (docs/results.md, "Receiving through io_uring"): one channel
 * 25-35 % faster than plain reads, more channels even. */
const struct transport_ops *const mig_dest_transport_default = &transport_uring;

void mig_dest_params_default(struct mig_dest_params *p)
{
	memset(p, 0, sizeof(*p));
	p->listen_fd = -1;
	p->accept_timeout_ms = -1;
	p->timeout_ms = 10000;
	p->recover_ms = 60000;
	p->dirty_track = "bitmap";
}

__attribute__((format(printf, 2, 3))) static int bad(struct receiver *t, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(t->conn.why, sizeof(t->conn.why), fmt, ap);
	va_end(ap);
	return -EPROTO;
}

static bool mine(const struct receiver *t, uint64_t gfn)
{
	return (gfn / CHUNK_PAGES) % t->d->n == t->k;
}

/* Many ranges of this process's memory dropped (MADV_DONTNEED) with few
 * system calls: process_madvise() on our own pidfd takes every advice
 * since Linux 6.13; where it does not, one madvise() a range. A hybrid
 * whose guest wrote all over RAM has thousands of stale runs to drop in
 * the downtime. */
#define DROP_BATCH 512
struct drop_batch {
	struct iovec v[DROP_BATCH];
	unsigned n;
	int pidfd; /* -1: not tried yet; -2: one madvise() a range */
};

static void drop_batch_init(struct drop_batch *b)
{
	b->n = 0;
	b->pidfd = -1;
}

static int drop_batch_flush(struct drop_batch *b)
{
	size_t total = 0;

	if (!b->n)
		return 0;
	if (b->pidfd == -1) {
		long fd = syscall(SYS_pidfd_open, getpid(), 0);
		b->pidfd = fd >= 0 ? (int)fd : -2;
	}
	for (unsigned i = 0; i < b->n; i++)
		total += b->v[i].iov_len;
	if (b->pidfd >= 0 &&
	    syscall(SYS_process_madvise, b->pidfd, b->v, b->n, MADV_DONTNEED, 0) == (long)total) {
		b->n = 0;
		return 0;
	}
	/* Refused (an older kernel) or short: every range on its own (a
	 * range dropped twice is dropped all the same). */
	if (b->pidfd >= 0) {
		close(b->pidfd);
		b->pidfd = -2;
	}
	for (unsigned i = 0; i < b->n; i++)
		if (madvise(b->v[i].iov_base, b->v[i].iov_len, MADV_DONTNEED))
			return -errno;
	b->n = 0;
	return 0;
}

static int drop_batch_add(struct drop_batch *b, void *p, size_t len)
{
	b->v[b->n++] = (struct iovec){p, len};
	return b->n == DROP_BATCH ? drop_batch_flush(b) : 0;
}

static void drop_batch_close(struct drop_batch *b)
{
	if (b->pidfd >= 0)
		close(b->pidfd);
	b->pidfd = -1;
}

/* Post-copy: while a faulted page is on its way, the push gives way
 * (briefly) to the thread that places it. */
#define PUSH_PIECE 16
static void give_way(struct uffd *u)
{
	for (int i = 0; u && i < 50 && uffd_waiting(u); i++)
		usleep(20);
}

static int recv_pages(struct receiver *t, const struct mig_rec_hdr *h)
{
	struct dst *d = t->d;
	struct mig_pages ph;
	uint32_t crc = 0;
	int r;

	if (h->len < sizeof(ph))
		return bad(t, "short PAGES record");
	r = mig_recv_part(&t->conn, &ph, sizeof(ph), &crc);
	if (r)
		return r;
	if (!ph.count || ph.count > MIG_MAX_RUN_PAGES ||
	    h->len != sizeof(ph) + (uint64_t)ph.count * 4096)
		return bad(t, "PAGES record of %u pages in %u bytes", ph.count, h->len);
	if (ph.gfn >= d->nr_pages || ph.count > d->nr_pages - ph.gfn)
		return bad(t, "pages %llu+%u beyond guest RAM", (unsigned long long)ph.gfn,
			   ph.count);
	if (!mine(t, ph.gfn) || !mine(t, ph.gfn + ph.count - 1))
		return bad(t, "pages %llu+%u on the wrong channel", (unsigned long long)ph.gfn,
			   ph.count);
	/* Straight into place. A bad checksum fails the whole migration, and
	 * this VM is then discarded, so nothing half-written is ever run.
	 * After a post-copy switch, through userfaultfd instead. */
	struct uffd *u = __atomic_load_n(&d->uffd, __ATOMIC_ACQUIRE);
	uint32_t *pcrc = h->flags & MIG_F_UNCHECKED ? NULL : &crc;
	if (u && !t->buf && !(t->buf = malloc(MIG_MAX_RUN_PAGES * 4096)))
		return -ENOMEM;
	give_way(u);
	if (u && u->alias && uffd_cached(u, ph.gfn, ph.count)) {
		/* MINOR mode, pages in the page cache: straight into the
		 * alias, then mapped. Only the pages this receiver claims are
		 * written there: a page placed already (the guest may have
		 * written it since) or being placed by another thread goes to
		 * the scratch buffer. (Holes come through the buffer: filling
		 * them from it is cheaper than faulting them into the alias.) */
		uint64_t mine[BITMAP_WORDS(MIG_MAX_RUN_PAGES)] = {0};
		uffd_claim(u, ph.gfn, ph.count, mine);
		for (uint32_t i = 0, k; i < ph.count && !r; i += k) {
			bool won = bitmap_test(mine, i);
			for (k = 1; i + k < ph.count && bitmap_test(mine, i + k) == won; k++)
				;
			r = mig_recv_part(&t->conn, won ? uffd_alias(u, ph.gfn + i) : t->buf,
					  (size_t)k * 4096, pcrc);
		}
		if (!r)
			r = mig_recv_crc_check(&t->conn, h, crc);
		if (!r && (r = uffd_continue(u, ph.gfn, ph.count, mine)))
			t->fatal = true; /* here, not on the connection */
		else if (r)
			uffd_unclaim(u, ph.gfn, ph.count, mine);
	} else if (u) {
		/* In pieces (push_yields), giving way between them: with a
		 * kernel that does not preempt, a fault's answer waits for the
		 * push's system call on its CPU. */
		uint32_t piece = d->push_yields ? PUSH_PIECE : ph.count;
		for (uint32_t i = 0, k; i < ph.count && !r; i += k) {
			k = MIN(ph.count - i, piece);
			r = mig_recv_part(&t->conn, t->buf + (size_t)i * 4096, (size_t)k * 4096,
					  pcrc);
			if (k < ph.count)
				give_way(u);
		}
		if (!r)
			r = mig_recv_crc_check(&t->conn, h, crc);
		for (uint32_t i = 0, k; i < ph.count && !r; i += k) {
			k = MIN(ph.count - i, piece);
			if ((r = uffd_place(u, ph.gfn + i, t->buf + (size_t)i * 4096, k)))
				t->fatal = true; /* here, not on the connection */
			else if (k < ph.count)
				give_way(u);
		}
	} else {
		r = mig_recv_part(&t->conn, d->vm->mem.regions[0].hva + ph.gfn * 4096,
				  (size_t)ph.count * 4096, pcrc);
		if (!r)
			r = mig_recv_crc_check(&t->conn, h, crc);
	}
	if (r)
		return r;
	for (uint64_t g = ph.gfn; g < ph.gfn + ph.count; g++)
		bitmap_set(d->touched, g);
	t->pages += ph.count;
	return 0;
}

static int recv_zero(struct receiver *t, const struct mig_rec_hdr *h)
{
	struct dst *d = t->d;
	struct {
		struct mig_zero z;
		uint64_t bits[CHUNK_PAGES / 64];
	} m;
	int r;

	if (h->len < sizeof(m.z) || h->len > sizeof(m))
		return bad(t, "ZERO record of %u bytes", h->len);
	r = mig_recv_payload(&t->conn, h, &m, h->len);
	if (r)
		return r;
	if (!m.z.count || m.z.count > CHUNK_PAGES ||
	    h->len != sizeof(m.z) + BITMAP_WORDS(m.z.count) * 8 || m.z.gfn % CHUNK_PAGES ||
	    m.z.gfn >= d->nr_pages || m.z.count > d->nr_pages - m.z.gfn || !mine(t, m.z.gfn))
		return bad(t, "ZERO record for %u pages at %llu", m.z.count,
			   (unsigned long long)m.z.gfn);
	uint64_t i;
	struct uffd *u = __atomic_load_n(&d->uffd, __ATOMIC_ACQUIRE);
	bitmap_for_each_set(i, m.bits, m.z.count)
	{
		uint64_t g = m.z.gfn + i, k = 1;
		/* Fresh memory is zero already: only a page written earlier in
		 * this migration needs clearing (and we never fault in the rest).
		 * After a post-copy switch every page must be placed: a run of
		 * them at once (in MINOR mode, a page the page cache holds, a
		 * stale copy maybe, gets its zeros through the alias). */
		if (u) {
			while (i + k < m.z.count && bitmap_test(m.bits, i + k))
				k++;
			r = uffd_place_zeros(u, g, k);
			if (r) {
				t->fatal = true;
				return r;
			}
		} else if (bitmap_test(d->touched, g)) {
			memset(d->vm->mem.regions[0].hva + g * 4096, 0, 4096);
		}
		for (uint64_t j = 0; j < k; j++)
			bitmap_set(d->zeroed, g + j);
		t->zero_pages += k;
		i += k - 1;
	}
	return 0;
}

static void *receiver_thread(void *arg)
{
	struct receiver *t = arg;
	struct mig_rec_hdr h;
	int r = 0;

	thread_name("mig-recv-%u", t->k);
	while (!r && !t->d->abort) {
		r = mig_recv_hdr(&t->conn, &h);
		if (r)
			break;
		switch (h.type) {
		case MIG_REC_PAGES:
			r = recv_pages(t, &h);
			break;
		case MIG_REC_ZERO:
			r = recv_zero(t, &h);
			break;
		case MIG_REC_MARK: {
			struct mig_mark m;
			r = mig_recv_payload(&t->conn, &h, &m, sizeof(m));
			if (!r && m.round <= t->mark)
				r = bad(t, "MARK of round %u after round %u", m.round, t->mark);
			if (!r) {
				pthread_mutex_lock(&t->d->lock);
				t->mark = m.round;
				pthread_cond_broadcast(&t->d->cond);
				pthread_mutex_unlock(&t->d->lock);
			}
			break;
		}
		case MIG_REC_END: {
			struct mig_end e;
			r = mig_recv_payload(&t->conn, &h, &e, sizeof(e));
			if (!r && (e.pages != t->pages - t->pages0 ||
				   e.zero_pages != t->zero_pages - t->zero_pages0))
				r = bad(t, "channel %u: %llu pages announced, %llu received",
					t->k + 1, (unsigned long long)e.pages,
					(unsigned long long)(t->pages - t->pages0));
			if (!r) {
				t->ended = true;
				return NULL;
			}
			break;
		}
		default:
			r = bad(t, "record type %u on a data channel", h.type);
			break;
		}
	}
	pthread_mutex_lock(&t->d->lock);
	t->err = r ? r : -ECANCELED;
	pthread_cond_broadcast(&t->d->cond);
	pthread_mutex_unlock(&t->d->lock);
	/* Wake the control loop at once: this migration cannot complete. */
	if (!t->d->abort)
		shutdown(t->d->ctl_fd, SHUT_RDWR);
	return NULL;
}

static int check_layout(void *opaque, const struct mig_hello *h, char *why, size_t len)
{
	const struct mig_dest_params *p = opaque;
	const struct mig_layout *l = &h->layout;

	if (h->role != MIG_ROLE_CONTROL) {
		snprintf(why, len, "expected the control connection first");
		return -EPROTO;
	}
	if (l->page_size != 4096 || !l->nr_vcpus || l->nr_vcpus > FLIT_MAX_VCPUS ||
	    l->mem_size < 4 * MiB || l->mem_size % (2 * MiB) ||
	    l->mem_size > FLIT_MAX_MEM_GIB * GiB || !l->nr_channels ||
	    l->nr_channels > MIG_MAX_CHANNELS) {
		snprintf(why, len, "invalid layout from the source");
		return -EPROTO;
	}
	if (p->mem_size && p->mem_size != l->mem_size) {
		snprintf(why, len, "the source has %llu MiB of RAM, this destination was told %llu",
			 (unsigned long long)(l->mem_size >> 20),
			 (unsigned long long)(p->mem_size >> 20));
		return -EINVAL;
	}
	if (p->nr_vcpus && p->nr_vcpus != l->nr_vcpus) {
		snprintf(why, len, "the source has %u vCPUs, this destination was told %u",
			 l->nr_vcpus, p->nr_vcpus);
		return -EINVAL;
	}
	return 0;
}

static int check_data(void *opaque, const struct mig_hello *h, char *why, size_t len)
{
	const struct mig_hello *ctl = opaque;

	if (h->role != MIG_ROLE_DATA || memcmp(h->session, ctl->session, 16) || h->channel < 1 ||
	    h->channel > ctl->layout.nr_channels) {
		snprintf(why, len, "data connection not part of this migration");
		return -EPROTO;
	}
	return 0;
}

/* A recovery's control connection: the same migration, the same layout. */
static int check_recover(void *opaque, const struct mig_hello *h, char *why, size_t len)
{
	const struct dst *d = opaque;
	const struct mig_layout *a = &h->layout, *b = &d->hello.layout;

	if (h->role != MIG_ROLE_RECOVER || memcmp(h->session, d->hello.session, 16) ||
	    a->mem_size != b->mem_size || a->nr_vcpus != b->nr_vcpus ||
	    a->nr_channels != b->nr_channels) {
		snprintf(why, len, "not a recovery of the migration waiting here");
		return -EPROTO;
	}
	return 0;
}

/* The data channels of the migration whose control connection said hello
 * (in any order), each with its receiver thread. On failure ctl->why says
 * why; receivers started are left for receivers_stop. */
static int accept_channels(struct dst *d, struct mig_conn *ctl, const struct mig_hello *hello)
{
	const struct mig_dest_params *p = d->p;
	struct mig_hello h2;
	int r;

	for (unsigned i = 0; i < d->n; i++) {
		struct mig_conn c = MIG_CONN_INIT;
		r = mig_accept(d->lfd, p->timeout_ms, &c);
		if (!r) {
			mig_conn_set_timeout(&c, p->timeout_ms);
			r = mig_handshake_accept(&c, p->token, p->token_len, &h2, check_data,
						 (void *)hello);
		}
		if (!r && d->rcv[h2.channel - 1].started) {
			snprintf(c.why, sizeof(c.why), "data channel %u twice", h2.channel);
			r = -EPROTO;
		}
		if (r) {
			snprintf(ctl->why, sizeof(ctl->why), "data channel: %.160s",
				 c.why[0] ? c.why : strerror(-r));
			mig_send_error(&c, r, "%s", ctl->why);
			mig_conn_close(&c);
			return r;
		}
		/* Channels may connect in any order: file each under its number.
		 * A data channel may idle through a whole round: the silence
		 * timeout is the control channel's (the source sends heartbeats
		 * there); a dead source is seen there, and that stops these. */
		struct receiver *t = &d->rcv[h2.channel - 1];
		mig_conn_set_timeouts(&c, 0, p->timeout_ms);
		r = mig_conn_attach_rx(&c, d->rx_ops, 0);
		if (r && !p->transport && d->rx_ops != &transport_sync) {
			/* io_uring off here (a sysctl, a seccomp filter): plain
			 * reads, as the source falls back to plain sends */
			log_info("io_uring receiving unavailable (%s): plain reads", strerror(-r));
			d->rx_ops = &transport_sync;
			r = mig_conn_attach_rx(&c, d->rx_ops, 0);
		}
		if (r) {
			snprintf(ctl->why, sizeof(ctl->why), "data channel: %s transport: %s",
				 d->rx_ops->name, strerror(-r));
			mig_conn_close(&c);
			return r;
		}
		t->conn = c;
		t->err = 0;
		t->ended = t->fatal = false;
		t->mark = 0;
		t->pages0 = t->pages;
		t->zero_pages0 = t->zero_pages;
		r = -pthread_create(&t->thread, NULL, receiver_thread, t);
		if (r)
			return r;
		t->started = true;
	}
	return 0;
}

/* Stops every receiver thread and closes its connection. */
static void receivers_stop(struct dst *d)
{
	d->abort = 1;
	for (unsigned i = 0; i < d->n; i++)
		if (d->rcv[i].conn.fd >= 0)
			shutdown(d->rcv[i].conn.fd, SHUT_RDWR);
	for (unsigned i = 0; i < d->n; i++) {
		if (d->rcv[i].started)
			pthread_join(d->rcv[i].thread, NULL);
		d->rcv[i].started = false;
		d->rx_before += d->rcv[i].conn.rx_bytes;
		d->rcv[i].conn.rx_bytes = 0;
		mig_conn_close(&d->rcv[i].conn);
	}
	d->abort = 0;
}

/* Every data channel has taken in round's MARK (or one failed, or the
 * timeout passed): then ROUND_DONE goes back to the source. */
static int round_done(struct dst *d, struct mig_conn *ctl, uint32_t round)
{
	struct timespec dl;
	bool all = false;

	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += d->p->timeout_ms / 1000 + 1;
	pthread_mutex_lock(&d->lock);
	for (;;) {
		all = true;
		for (unsigned i = 0; i < d->n; i++) {
			if (d->rcv[i].err) {
				pthread_mutex_unlock(&d->lock);
				return 0; /* the control loop will report it */
			}
			all &= d->rcv[i].mark >= round;
		}
		if (all || pthread_cond_timedwait(&d->cond, &d->lock, &dl) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&d->lock);
	if (!all)
		return 0; /* too late: the source has given up on its own timeout */
	struct mig_mark m = {.round = round};
	return mig_send_rec(ctl, MIG_REC_ROUND_DONE, &m, sizeof(m));
}

/* MEMSVC: where the RAM is, and the hot pages. Checked before use: one
 * record, a terminated URL of the right form, page numbers in range. */
static int recv_memsvc(struct dst *d, struct mig_conn *ctl, const struct mig_rec_hdr *h)
{
	struct mig_memsvc m;
	uint32_t crc = 0;
	int r;

	if (d->memsvc || d->postcopy || h->len < sizeof(m) || (h->len - sizeof(m)) % 8 ||
	    (h->len - sizeof(m)) / 8 > MIG_MEMSVC_MAX_HOT) {
		snprintf(ctl->why, sizeof(ctl->why), "MEMSVC record of %u bytes%s", h->len,
			 d->memsvc     ? " (a second one)"
			 : d->postcopy ? " with POSTCOPY"
				       : "");
		return -EPROTO;
	}
	r = mig_recv_part(ctl, &m, sizeof(m), &crc);
	if (r)
		return r;
	if (m.nr_hot != (h->len - sizeof(m)) / 8 || !memchr(m.url, 0, sizeof(m.url)) ||
	    strncmp(m.url, "memsvc://", 9)) {
		snprintf(ctl->why, sizeof(ctl->why), "MEMSVC record: bad URL or hot page count");
		return -EPROTO;
	}
	d->hot = calloc(MAX(m.nr_hot, 1), sizeof(*d->hot));
	if (!d->hot)
		return -ENOMEM;
	r = mig_recv_part(ctl, d->hot, (size_t)m.nr_hot * 8, &crc);
	if (!r)
		r = mig_recv_crc_check(ctl, h, crc);
	for (uint32_t i = 0; i < m.nr_hot && !r; i++)
		if (d->hot[i] >= d->nr_pages) {
			snprintf(ctl->why, sizeof(ctl->why), "MEMSVC record: hot page %llu",
				 (unsigned long long)d->hot[i]);
			r = -EPROTO;
		}
	if (r)
		return r;
	if (d->vm->mem.regions[0].backing != MEM_ANON) {
		snprintf(ctl->why, sizeof(ctl->why),
			 "memsvc-backed RAM needs anonymous guest RAM (--mem-backend anon)");
		return -ENOTSUP;
	}
	memcpy(d->memsvc_url, m.url, sizeof(m.url));
	d->nr_hot = m.nr_hot;
	d->memsvc = true;
	return 0;
}

static int postcopy_prepare(struct dst *d, struct mig_conn *ctl);

static int recv_state(struct dst *d, struct mig_conn *ctl, uint32_t *rounds)
{
	struct vm *vm = d->vm;
	struct x86_cpu_state *st = calloc(vm->nr_vcpus, sizeof(*st));
	struct x86_vm_state vmst;
	size_t dsz = vm_devices_state_size(vm);
	void *devs = malloc(dsz);
	uint64_t have = 0;
	struct mig_rec_hdr h;
	int r = !st || !devs ? -ENOMEM : 0;

	while (!r) {
		r = mig_recv_hdr(ctl, &h);
		if (r)
			break;
		if (h.type == MIG_REC_ROUND) {
			struct mig_round rr;
			r = mig_recv_payload(ctl, &h, &rr, sizeof(rr));
			if (!r)
				r = round_done(d, ctl, rr.round);
			continue;
		}
		if (h.type == MIG_REC_HEARTBEAT) {
			uint64_t sent;
			r = mig_recv_payload(ctl, &h, &sent, sizeof(sent));
			continue;
		}
		if (h.type == MIG_REC_CPU) {
			struct mig_cpu c;
			uint32_t crc = 0;
			if (h.len != sizeof(c) + sizeof(*st)) {
				snprintf(ctl->why, sizeof(ctl->why), "CPU record of %u bytes",
					 h.len);
				r = -EPROTO;
				break;
			}
			r = mig_recv_part(ctl, &c, sizeof(c), &crc);
			if (!r && (c.index >= vm->nr_vcpus || c.size != sizeof(*st) ||
				   have & (1ULL << c.index))) {
				snprintf(ctl->why, sizeof(ctl->why), "CPU record for vCPU %u",
					 c.index);
				r = -EPROTO;
			}
			if (!r)
				r = mig_recv_part(ctl, &st[c.index], sizeof(*st), &crc);
			if (!r)
				r = mig_recv_crc_check(ctl, &h, crc);
			if (!r && (st[c.index].nr_msrs > X86_MAX_MSRS ||
				   st[c.index].nr_xcrs > X86_MAX_XCRS ||
				   st[c.index].xsave_size > X86_XSAVE_MAX_SIZE)) {
				snprintf(ctl->why, sizeof(ctl->why), "vCPU %u state out of bounds",
					 c.index);
				r = -EPROTO;
			}
			have |= 1ULL << c.index;
			continue;
		}
		if (h.type == MIG_REC_DISCARD) {
			/* A span of the bitmap: gfn a multiple of 64, inside RAM. */
			struct mig_discard dh;
			uint32_t crc = 0;
			if (h.len < sizeof(dh)) {
				snprintf(ctl->why, sizeof(ctl->why), "DISCARD record of %u bytes",
					 h.len);
				r = -EPROTO;
				break;
			}
			r = mig_recv_part(ctl, &dh, sizeof(dh), &crc);
			if (!r && (dh.gfn % 64 || !dh.count || dh.gfn >= d->nr_pages ||
				   dh.count > d->nr_pages - dh.gfn ||
				   h.len != sizeof(dh) + BITMAP_WORDS(dh.count) * 8)) {
				snprintf(ctl->why, sizeof(ctl->why),
					 "DISCARD of %u pages at %llu in %u bytes", dh.count,
					 (unsigned long long)dh.gfn, h.len);
				r = -EPROTO;
			}
			if (!r && !d->discard && !(d->discard = bitmap_alloc(d->nr_pages)))
				r = -ENOMEM;
			uint64_t *span = r ? NULL : d->discard + dh.gfn / 64;
			if (!r)
				r = mig_recv_part(ctl, span, BITMAP_WORDS(dh.count) * 8, &crc);
			if (!r && dh.count % 64)
				span[dh.count / 64] &= (1ULL << (dh.count % 64)) - 1;
			if (!r)
				r = mig_recv_crc_check(ctl, &h, crc);
			continue;
		}
		if (h.type == MIG_REC_POSTCOPY) {
			struct mig_postcopy pc;
			r = mig_recv_payload(ctl, &h, &pc, sizeof(pc));
			if (!r && pc.flags & ~MIG_POSTCOPY_F_YIELD) {
				snprintf(ctl->why, sizeof(ctl->why), "POSTCOPY with flags 0x%x",
					 pc.flags);
				r = -EPROTO;
			}
			d->push_yields = !r && pc.flags & MIG_POSTCOPY_F_YIELD;
			/* Refused here, before the switch, if this host cannot
			 * do it: the source then keeps its guest. memfd RAM
			 * takes MINOR mode, anonymous RAM MISSING mode. */
			bool minor = vm->mem.regions[0].backing == MEM_MEMFD;
			int e = r ? 0 : uffd_probe(minor);
			if (e) {
				snprintf(ctl->why, sizeof(ctl->why), "post-copy: userfaultfd: %s%s",
					 strerror(-e),
					 e == -EPERM ? " (post-copy needs root or "
						       "vm.unprivileged_userfaultfd=1)"
					 : e == -ENOTSUP && minor
					     ? " (memfd RAM needs minor faults on shared "
					       "memory, Linux 5.14; or --mem-backend anon)"
					     : "");
				r = e;
			}
			d->postcopy = true;
			continue;
		}
		if (h.type == MIG_REC_MEMSVC) {
			r = recv_memsvc(d, ctl, &h);
			continue;
		}
		if (h.type == MIG_REC_ADVISE) {
			/* Post-copy from the start: no page has come yet (the
			 * source waits for the answer), so RAM goes under
			 * userfaultfd now, not inside the downtime. */
			struct mig_postcopy adv;
			r = mig_recv_payload(ctl, &h, &adv, sizeof(adv));
			if (!r && (d->uffd || d->memsvc)) {
				snprintf(ctl->why, sizeof(ctl->why), "ADVISE out of place");
				r = -EPROTO;
			}
			if (!r) {
				uint64_t t_prep = now_ns();
				r = postcopy_prepare(d, ctl);
				log_debug("post-copy: RAM registered with userfaultfd in %.2f ms, "
					  "before the switch",
					  (double)(now_ns() - t_prep) / 1e6);
			}
			if (!r)
				r = mig_send_rec(ctl, MIG_REC_ADVISE, &adv, sizeof(adv));
			continue;
		}
		if (h.type == MIG_REC_VMSTATE) {
			r = mig_recv_payload(ctl, &h, &vmst, sizeof(vmst));
			have |= 1ULL << 62;
			continue;
		}
		if (h.type == MIG_REC_DEVICES) {
			r = mig_recv_payload(ctl, &h, devs, dsz);
			have |= 1ULL << 63;
			continue;
		}
		if (h.type == MIG_REC_COMPLETE) {
			struct mig_complete c;
			r = mig_recv_payload(ctl, &h, &c, sizeof(c));
			uint64_t want = ((1ULL << vm->nr_vcpus) - 1) | 3ULL << 62;
			if (!r && (have != want || c.nr_cpus != vm->nr_vcpus)) {
				snprintf(ctl->why, sizeof(ctl->why),
					 "COMPLETE before all vCPU, VM and device state");
				r = -EPROTO;
			}
			if (!r && d->discard && !d->postcopy && !d->memsvc) {
				snprintf(ctl->why, sizeof(ctl->why),
					 "DISCARD without POSTCOPY or MEMSVC");
				r = -EPROTO;
			}
			if (!r)
				*rounds = c.rounds;
			break;
		}
		if (h.type == MIG_REC_ERROR) {
			r = mig_recv_error(ctl, &h, "source gave up");
			break;
		}
		snprintf(ctl->why, sizeof(ctl->why), "record type %u on the control channel",
			 h.type);
		r = -EPROTO;
	}
	/* A data channel that failed explains a control channel cut short. */
	for (unsigned i = 0; i < d->n && r; i++) {
		if (d->rcv[i].started && d->rcv[i].err && d->rcv[i].err != -ECANCELED) {
			snprintf(ctl->why, sizeof(ctl->why), "data channel %u: %.150s", i + 1,
				 d->rcv[i].conn.why[0] ? d->rcv[i].conn.why
						       : strerror(-d->rcv[i].err));
			r = d->rcv[i].err;
			break;
		}
	}
	/* Post-copy: every data channel has delivered what went before the
	 * switch (round 1's MARK); the rest comes later. */
	if (!r && d->postcopy) {
		pthread_mutex_lock(&d->lock);
		for (;;) {
			bool all = true;
			for (unsigned i = 0; i < d->n && !r; i++) {
				if (d->rcv[i].err)
					r = d->rcv[i].err;
				all &= d->rcv[i].mark >= 1;
			}
			if (r || all)
				break;
			pthread_cond_wait(&d->cond, &d->lock);
		}
		pthread_mutex_unlock(&d->lock);
		if (r)
			snprintf(ctl->why, sizeof(ctl->why),
				 "a data channel failed before the switch");
		/* Stale copies are dropped at the switch: they fault and come
		 * again. (Every receiver is idle now, past its MARK.) */
		if (!r && d->discard) {
			uint64_t g;
			bitmap_for_each_set(g, d->discard, d->nr_pages)
			{
				bitmap_clear(d->touched, g);
				bitmap_clear(d->zeroed, g);
			}
		}
	}
	uint64_t t0 = now_ns();
	/* Every data channel must have delivered all its pages. */
	for (unsigned i = 0; i < d->n && !r && !d->postcopy; i++) {
		pthread_join(d->rcv[i].thread, NULL);
		d->rcv[i].started = false;
		if (d->rcv[i].err || !d->rcv[i].ended) {
			r = d->rcv[i].err ? d->rcv[i].err : -EPROTO;
			snprintf(ctl->why, sizeof(ctl->why), "data channel %u: %s", i + 1,
				 d->rcv[i].conn.why[0] ? d->rcv[i].conn.why : strerror(-r));
		}
	}
	/* memsvc: copies that went stale since a round brought them (the
	 * page went back to memsvc, changed) are not kept: memsvc's is the
	 * page. Every receiver is done. */
	if (!r && d->memsvc && d->discard) {
		uint64_t g;
		bitmap_for_each_set(g, d->discard, d->nr_pages)
		{
			bitmap_clear(d->touched, g);
			bitmap_clear(d->zeroed, g);
		}
	}
	uint64_t t1 = now_ns();
	if (!r)
		r = vm_restore_cpus(vm, st, &vmst);
	uint64_t t2 = now_ns();
	if (!r)
		r = vm_restore_devices(vm, devs);
	log_debug("after COMPLETE: last pages in %.2f ms, vCPU state %.2f ms, devices %.2f ms",
		  (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6, (double)(now_ns() - t2) / 1e6);
	if (r && !ctl->why[0])
		snprintf(ctl->why, sizeof(ctl->why), "restoring the guest's state: %s",
			 strerror(-r));
	free(st);
	free(devs);
	return r;
}

static void send_guest_stall(struct vm *vm, struct mig_conn *ctl, bool running, int32_t tail_speed);

/* How far the guest has got: its vCPUs' progress counters, summed (test
 * guests report rounds over their working set; 0 for others). */
static uint32_t guest_progress(struct vm *vm)
{
	uint32_t sum = 0;

	for (uint32_t v = 0; v < vm->nr_vcpus; v++)
		sum += testdev_slot(&vm->testdev, v).progress;
	return sum;
}

/* The fault thread asks the source for a page. */
static int request_page(void *opaque, uint64_t gfn)
{
	struct dst *d = opaque;
	struct mig_page_req q = {.gfn = gfn, .count = 1};

	pthread_mutex_lock(&d->send_lock);
	int r = d->ctl_down ? 0 : mig_send_rec(d->ctl, MIG_REC_PAGE_REQ, &q, sizeof(q));
	if (r && d->p->recover_ms > 0) {
		/* The connection broke: the session thread sees it too, and
		 * once recovered asks again for every page still waited on. */
		d->ctl_down = true;
		shutdown(d->ctl->fd, SHUT_RDWR);
		r = 0;
	}
	pthread_mutex_unlock(&d->send_lock);
	return r;
}

/* At the post-copy switch: the pages that have not arrived are dropped (a
 * preallocated RAM holds zeros there, which would hide the faults) and
 * registered with userfaultfd; from now on receivers place pages through
 * it and the fault thread asks for what the guest touches.
 *
 * Anonymous RAM: MISSING mode, the dropped pages are gone. memfd RAM:
 * MINOR mode; dropping only zaps the page-table entries (MADV_DONTNEED on
 * a shared mapping keeps the page cache: a preallocated zero, or a stale
 * copy held back at the switch), so a touch gives a MINOR fault, and a
 * page never written at all (a hole) a MISSING one. */
static int postcopy_prepare(struct dst *d, struct mig_conn *ctl)
{
	struct mem_region *mr = &d->vm->mem.regions[0];
	uint8_t *ram = mr->hva;
	bool minor = mr->backing == MEM_MEMFD;
	struct uffd *u = calloc(1, sizeof(*u));
	uint64_t t0 = now_ns(), t1 = t0;
	int r;

	/* What stays: pages written here, and pages that arrived as zero
	 * where RAM was preallocated (zeros already). */
	uint64_t *keep = bitmap_alloc(d->nr_pages);
	if (!u || !keep) {
		free(u);
		free(keep);
		return -ENOMEM;
	}
	for (uint64_t w = 0; w < BITMAP_WORDS(d->nr_pages); w++)
		keep[w] = d->touched[w] | (d->p->prealloc ? d->zeroed[w] : 0);
	/* A word at a time: at 4 GiB, a page at a time was a millisecond of
	 * the downtime. Many ranges per system call where the kernel can. */
	struct drop_batch *db = malloc(sizeof(*db));
	if (!db) {
		free(u);
		free(keep);
		return -ENOMEM;
	}
	drop_batch_init(db);
	r = 0;
	for (uint64_t g = bitmap_next_clear(keep, d->nr_pages, 0), e; g < d->nr_pages && !r;
	     g = bitmap_next_clear(keep, d->nr_pages, e)) {
		e = bitmap_next_set(keep, d->nr_pages, g);
		r = drop_batch_add(db, ram + g * 4096, (e - g) * 4096);
	}
	if (!r)
		r = drop_batch_flush(db);
	drop_batch_close(db);
	free(db);
	if (r) {
		free(u);
		free(keep);
		return r;
	}
	/* Huge pages would fault in 2 MiB at a time, zeros included. */
	madvise(ram, d->nr_pages * 4096, MADV_NOHUGEPAGE);
	t1 = now_ns();
	r = minor ? uffd_open_minor(u, ram, mr->alias, d->nr_pages)
		  : uffd_open(u, ram, d->nr_pages, 0);
	if (r) {
		snprintf(ctl->why, sizeof(ctl->why), "userfaultfd%s: %s%s",
			 minor ? " (MINOR mode)" : "", strerror(-r),
			 r == -EPERM ? " (post-copy needs root or vm.unprivileged_userfaultfd=1)"
				     : "");
		free(u);
		free(keep);
		return r;
	}
	/* Kept pages are present (one pass over the bitmap's words); pages
	 * that arrived as zero into RAM that was not preallocated are not
	 * (they would fault): they get zeros, a run at a time. */
	uffd_mark_present_bitmap(u, keep);
	for (uint64_t w = 0; w < BITMAP_WORDS(d->nr_pages) && !d->p->prealloc; w++)
		keep[w] = ~keep[w] & d->zeroed[w]; /* now: the pages to zero */
	for (uint64_t g = bitmap_next_set(keep, d->nr_pages, 0), e;
	     g < d->nr_pages && !r && !d->p->prealloc; g = bitmap_next_set(keep, d->nr_pages, e)) {
		e = bitmap_next_clear(keep, d->nr_pages, g);
		r = uffd_place_zeros(u, g, e - g);
	}
	free(keep);
	if (r) {
		uffd_close(u);
		free(u);
		return r;
	}
	log_debug("post-copy: %s mode, pages dropped in %.2f ms, registered and counted in %.2f ms",
		  minor ? "MINOR" : "MISSING", (double)(t1 - t0) / 1e6,
		  (double)(now_ns() - t1) / 1e6);
	d->ctl = ctl;
	static const struct page_source_ops source_vmm = {.name = "source VMM",
							  .request = request_page};
	r = uffd_start(u, &source_vmm, d);
	if (r) {
		uffd_close(u);
		free(u);
		return r;
	}
	__atomic_store_n(&d->uffd, u, __ATOMIC_RELEASE);
	return 0;
}

/* Post-copy broke (cause): the guest waits for the pages it lacks, the
 * fault thread keeps asking into the void. Wait up to recover_ms for the
 * source to come back on the listener with the same session; then tell it
 * which pages are here and ask again for every page a fault waits on.
 * Before GO (ready): the guest has not run here, and the new connection
 * says READY again instead, for the source's GO. */
static int postcopy_recover(struct dst *d, struct mig_conn *ctl, int cause, bool ready)
{
	const struct mig_dest_params *p = d->p;
	struct uffd *u = d->uffd;
	struct mig_conn c = MIG_CONN_INIT;
	struct mig_hello h;
	char why[200];
	int r;

	snprintf(why, sizeof(why), "%s", ctl->why[0] ? ctl->why : strerror(-cause));
	for (unsigned i = 0; i < d->n; i++)
		if (d->rcv[i].err && d->rcv[i].err != -ECANCELED && d->rcv[i].conn.why[0]) {
			snprintf(why, sizeof(why), "data channel %u: %.150s", i + 1,
				 d->rcv[i].conn.why);
			break;
		}
	pthread_mutex_lock(&d->send_lock);
	d->ctl_down = true;
	pthread_mutex_unlock(&d->send_lock);
	receivers_stop(d);
	d->rx_before += ctl->rx_bytes;
	mig_conn_close(ctl);
	d->ctl_fd = -1;
	if (ready)
		log_warn("the connection to the source broke before its go (%s); the guest has "
			 "not run here; waiting up to %d s for the source to reconnect",
			 why, p->recover_ms / 1000);
	else
		log_warn("post-copy: the connection to the source broke (%s); the guest waits for "
			 "%llu pages; waiting up to %d s for the source to reconnect",
			 why, (unsigned long long)(d->nr_pages - u->nr_placed),
			 p->recover_ms / 1000);
	uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)p->recover_ms * 1000000ULL;
	for (;;) {
		uint64_t now = now_ns();
		if (u && u->err) {
			snprintf(ctl->why, sizeof(ctl->why), "the fault service failed: %s",
				 strerror(-u->err));
			return u->err;
		}
		if (now >= deadline) {
			snprintf(
			    ctl->why, sizeof(ctl->why),
			    "the source did not reconnect within %d s; post-copy broke on: %.130s",
			    p->recover_ms / 1000, why);
			return -ETIMEDOUT;
		}
		r = mig_accept(d->lfd, (int)MIN((deadline - now) / 1000000ULL + 1, 1000), &c);
		if (r == -ETIMEDOUT)
			continue;
		if (r) {
			log_warn("post-copy recovery: accepting: %s", strerror(-r));
			usleep(100000);
			continue;
		}
		mig_conn_set_timeout(&c, p->timeout_ms);
		d->ctl_fd = c.fd; /* a receiver that fails shuts this one down */
		r = mig_handshake_accept(&c, p->token, p->token_len, &h, check_recover, d);
		if (!r)
			r = accept_channels(d, &c, &h);
		if (!r)
			break;
		log_warn("refused a post-copy recovery: %s", c.why[0] ? c.why : strerror(-r));
		receivers_stop(d);
		mig_conn_close(&c);
		d->ctl_fd = -1;
	}
	if (ready) {
		*ctl = c;
		d->ctl_fd = c.fd;
		d->ctl_down = false;
		r = mig_send_rec(ctl, MIG_REC_READY, NULL, 0);
		if (!r) {
			d->recoveries++;
			log_info("recovered before the switch after %.2f s: READY again",
				 (double)(now_ns() - t0) / 1e9);
		}
		return r;
	}
	/* The pages here (no receiver places any until the source has read
	 * this), then every page a fault still waits on. */
	size_t words = BITMAP_WORDS(d->nr_pages);
	uint64_t *have = malloc(words * 8), again = 0;
	if (!have)
		return -ENOMEM;
	for (size_t w = 0; w < words; w++)
		have[w] = __atomic_load_n(&u->placed[w], __ATOMIC_ACQUIRE);
	struct mig_recover rc = {
	    .gfn = 0, .count = (uint32_t)d->nr_pages, .recoveries = d->recoveries + 1};
	struct iovec iov[2] = {{&rc, sizeof(rc)}, {have, words * 8}};
	pthread_mutex_lock(&d->send_lock);
	*ctl = c;
	d->ctl_fd = c.fd;
	d->ctl_down = false;
	r = mig_send_iov(ctl, MIG_REC_RECOVER, iov, 2);
	for (uint64_t g = 0; g < d->nr_pages && !r; g++) {
		if (__atomic_load_n(&u->fault_ns[g], __ATOMIC_ACQUIRE) <= UFFD_PLACED)
			continue;
		struct mig_page_req q = {.gfn = g, .count = 1};
		r = mig_send_rec(ctl, MIG_REC_PAGE_REQ, &q, sizeof(q));
		again++;
	}
	pthread_mutex_unlock(&d->send_lock);
	free(have);
	if (r)
		return r; /* broke again: the caller waits again */
	d->recoveries++;
	log_info("post-copy recovered after %.2f s: %llu pages to come, %llu asked for again",
		 (double)(now_ns() - t0) / 1e9, (unsigned long long)(d->nr_pages - u->nr_placed),
		 (unsigned long long)again);
	return 0;
}

/* A failure that a new connection cannot mend: the fault service or a
 * placement failed here, memory ran out, or the source gave up (its ERROR). */
static bool postcopy_fatal(struct dst *d, int r)
{
	if (r == -ECONNABORTED || r == -ENOMEM || (d->uffd && d->uffd->err) ||
	    d->p->recover_ms <= 0)
		return true;
	for (unsigned i = 0; i < d->n; i++)
		if (d->rcv[i].fatal)
			return true;
	return false;
}

/* Post-copy after the switch: place the answers to the fault thread's
 * requests as they come on the control connection, until every data
 * channel has ended its push and every page is there. Heartbeats keep the
 * source's silence timeout quiet; no progress for timeout_ms breaks the
 * connection, as does any error on it: then the source may recover it. */
static int postcopy_place(struct dst *d, struct mig_conn *ctl, struct mig_report *rep)
{
	struct uffd *u = d->uffd;
	uint8_t *buf = malloc(MIG_MAX_RUN_PAGES * 4096);
	uint64_t t0 = now_ns(), last_beat = t0, last_progress = t0, seen = 0;
	uint32_t p0 = guest_progress(d->vm);
	bool pushed = false; /* every channel has ended its push */
	int r = buf ? 0 : -ENOMEM;

again:
	while (!r) {
		struct pollfd pf = {.fd = ctl->fd, .events = POLLIN};
		int n = poll(&pf, 1, 100);
		if (n < 0 && errno != EINTR) {
			r = -errno;
			break;
		}
		if (n > 0) {
			struct mig_rec_hdr h;
			struct mig_pages ph;
			uint32_t crc = 0;
			r = mig_recv_hdr(ctl, &h);
			if (r)
				break;
			if (h.type == MIG_REC_ERROR) {
				r = mig_recv_error(ctl, &h, "source gave up");
				break;
			}
			if (h.type == MIG_REC_ZERO) {
				/* Pages sent along with an answer that are zero:
				 * {gfn, count <= 64}, a bitmap word. */
				struct {
					struct mig_zero z;
					uint64_t bits;
				} m;
				r = mig_recv_payload(ctl, &h, &m, sizeof(m));
				if (!r && (!m.z.count || m.z.count > 64 || m.z.gfn >= d->nr_pages ||
					   m.z.count > d->nr_pages - m.z.gfn)) {
					snprintf(ctl->why, sizeof(ctl->why),
						 "bad zero pages %llu+%u",
						 (unsigned long long)m.z.gfn, m.z.count);
					r = -EPROTO;
				}
				for (uint32_t i = 0, k; !r && i < m.z.count; i += k) {
					bool z = m.bits >> i & 1;
					for (k = 1;
					     i + k < m.z.count && (m.bits >> (i + k) & 1) == z; k++)
						;
					if (z && (r = uffd_place_zeros(u, m.z.gfn + i, k))) {
						free(buf);
						return r; /* here: no recovery */
					}
				}
				if (r)
					break;
				goto progress;
			}
			if (h.type != MIG_REC_PAGES || h.len < sizeof(ph)) {
				snprintf(ctl->why, sizeof(ctl->why),
					 "record type %u during post-copy", h.type);
				r = -EPROTO;
				break;
			}
			r = mig_recv_part(ctl, &ph, sizeof(ph), &crc);
			if (!r && (!ph.count || ph.count > MIG_MAX_RUN_PAGES ||
				   h.len != sizeof(ph) + (uint64_t)ph.count * 4096 ||
				   ph.gfn >= d->nr_pages || ph.count > d->nr_pages - ph.gfn)) {
				snprintf(ctl->why, sizeof(ctl->why), "bad answer: pages %llu+%u",
					 (unsigned long long)ph.gfn, ph.count);
				r = -EPROTO;
			}
			if (!r)
				r = mig_recv_part(ctl, buf, (size_t)ph.count * 4096,
						  h.flags & MIG_F_UNCHECKED ? NULL : &crc);
			if (!r)
				r = mig_recv_crc_check(ctl, &h, crc);
			if (!r && (r = uffd_place(u, ph.gfn, buf, ph.count))) {
				snprintf(ctl->why, sizeof(ctl->why), "placing pages %llu+%u: %s",
					 (unsigned long long)ph.gfn, ph.count, strerror(-r));
				free(buf);
				return r; /* here, not on the connection: no recovery */
			}
			if (r)
				break;
		}
	progress:;
		uint64_t now = now_ns(), placed = __atomic_load_n(&u->nr_placed, __ATOMIC_RELAXED);
		if (placed != seen) {
			seen = placed;
			last_progress = now;
		} else if (now - last_progress > (uint64_t)d->p->timeout_ms * 1000000ULL) {
			if (pushed)
				snprintf(ctl->why, sizeof(ctl->why),
					 "the push ended with %llu of %llu pages in place, and no "
					 "page came for %d ms",
					 (unsigned long long)placed,
					 (unsigned long long)d->nr_pages, d->p->timeout_ms);
			else
				snprintf(ctl->why, sizeof(ctl->why),
					 "no page arrived for %d ms during post-copy",
					 d->p->timeout_ms);
			r = -ETIMEDOUT;
			break;
		}
		if (u->err) {
			r = u->err;
			snprintf(ctl->why, sizeof(ctl->why), "the fault service failed: %s",
				 strerror(-r));
			break;
		}
		if (now - last_beat > 1000000000ULL) {
			last_beat = now;
			pthread_mutex_lock(&d->send_lock);
			r = mig_send_rec(ctl, MIG_REC_HEARTBEAT, &seen, sizeof(seen));
			pthread_mutex_unlock(&d->send_lock);
		}
		/* Done when every channel ended its push and every page is in. */
		bool ended = true;
		pthread_mutex_lock(&d->lock);
		for (unsigned i = 0; i < d->n && !r; i++) {
			if (d->rcv[i].err && !d->rcv[i].ended) {
				r = d->rcv[i].err;
				snprintf(ctl->why, sizeof(ctl->why), "data channel %u: %.150s",
					 i + 1,
					 d->rcv[i].conn.why[0] ? d->rcv[i].conn.why : strerror(-r));
			}
			ended &= d->rcv[i].ended;
		}
		pthread_mutex_unlock(&d->lock);
		/* Pages that went with an answer on this connection were taken
		 * out of the push, and may still be on their way when every
		 * channel has ended: wait for them (the silence above fails a
		 * page that never comes, and recovery asks for it again). */
		pushed = ended && !r;
		if (pushed && uffd_complete(u))
			break;
	}
	if (r && !postcopy_fatal(d, r)) {
		r = postcopy_recover(d, ctl, r, false);
		/* A recovery that broke at once waits again, up to its time. */
		while (r && !postcopy_fatal(d, r) && r != -ETIMEDOUT)
			r = postcopy_recover(d, ctl, r, false);
		last_progress = now_ns();
		if (!r)
			goto again;
	}
	free(buf);
	if (r)
		return r;
	struct mig_postcopy_done dn = {.faults = u->faults,
				       .pulled = u->pulled,
				       .placed_ns = now_ns() - t0,
				       .twice = __atomic_load_n(&u->eexist, __ATOMIC_RELAXED)};
	static const double q[5] = {0.5, 0.9, 0.99, 0.999, 1.0};
	uffd_latency_quantiles(u, q, dn.lat_us, 5);
	rep->postcopy_ms = (double)dn.placed_ns / 1e6;
	rep->faults = dn.faults;
	rep->pages_pulled = dn.pulled;
	rep->pages_twice = dn.twice;
	memcpy(rep->fault_lat_us, dn.lat_us, sizeof(dn.lat_us));
	uint32_t p_end = guest_progress(d->vm);
	/* Every page is here: the guest's memory is plain memory again. */
	__atomic_store_n(&d->uffd, NULL, __ATOMIC_RELEASE);
	uffd_close(u);
	free(u);
	pthread_mutex_lock(&d->send_lock);
	r = mig_send_rec(ctl, MIG_REC_POSTCOPY_DONE, &dn, sizeof(dn));
	pthread_mutex_unlock(&d->send_lock);
	/* The guest's speed in the tail against its speed now, every page
	 * local, over as long (0.1 to 0.5 s), or longer until every vCPU has
	 * finished a round (5 s at most: a slow host, big rounds): after
	 * POSTCOPY_DONE, so that the source's times do not count the wait. */
	uint64_t t_end = now_ns(), win = MIN(MAX(dn.placed_ns, 100000000ULL), 500000000ULL);
	uint32_t p_after = p_end;
	while (now_ns() - t_end < 5000000000ULL) {
		usleep(10000);
		p_after = guest_progress(d->vm);
		if (now_ns() - t_end >= win && p_after - p_end >= d->vm->nr_vcpus)
			break;
	}
	double tail = (double)(p_end - p0) / (double)dn.placed_ns,
	       after = (double)(p_after - p_end) / (double)(now_ns() - t_end);
	rep->tail_speed_pct = after > 0 ? 100.0 * tail / after : -1;
	if (!r)
		send_guest_stall(d->vm, ctl, true,
				 after > 0 ? (int32_t)MIN(1000.0 * tail / after, 1e9) : -1);
	return r;
}

/* This thread places the answers that vCPUs wait on: short time slices
 * while it does. */
static int postcopy_run(struct dst *d, struct mig_conn *ctl, struct mig_report *rep)
{
	thread_latency(true);
	int r = postcopy_place(d, ctl, rep);
	thread_latency(false);
	return r;
}

/* Tells the source how long the guest saw itself stopped, once every vCPU
 * has run a round here (at most a second's wait; best effort). */
static void send_guest_stall(struct vm *vm, struct mig_conn *ctl, bool running, int32_t tail_speed)
{
	struct mig_guest_stall g = {0};
	uint32_t top = 0;

	for (uint32_t v = 0; v < vm->nr_vcpus; v++)
		top = MAX(top, testdev_slot(&vm->testdev, v).progress);
	if (running && !testdev_wait_progress(&vm->testdev, vm->nr_vcpus, top + 1, 1000)) {
		g.stall_us = vm_memcheck_max_stall_us(vm);
		g.known = g.stall_us != 0;
	}
	if (tail_speed >= 0) {
		g.known |= 2;
		g.tail_speed = (uint32_t)tail_speed;
	}
	struct iovec iov = {&g, sizeof(g)};
	(void)mig_send_iov_flags(ctl, MIG_REC_GUEST_STALL, MIG_F_OPTIONAL, &iov, 1);
}

int mig_dest_run(const struct mig_dest_params *p, struct vm **out, struct mig_report *rep)
{
	struct dst d = {.p = p};
	struct mig_conn ctl = MIG_CONN_INIT;
	struct mig_hello hello;
	int lfd = p->listen_fd, r;
	uint64_t t_start = 0, t_complete;
	uint32_t rounds = 0;

	memset(rep, 0, sizeof(*rep));
	rep->guest_stall_ms = -1;
	rep->tail_speed_pct = -1;
	rep->paused_at_ms = rep->resumed_at_ms = -1;
	snprintf(rep->mode, sizeof(rep->mode), "precopy");
	snprintf(rep->status, sizeof(rep->status), "failed");
	pthread_mutex_init(&d.lock, NULL);
	pthread_mutex_init(&d.send_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&d.cond, &ca);
	pthread_condattr_destroy(&ca);
	d.rx_ops = p->transport ? p->transport : mig_dest_transport_default;
	snprintf(rep->transport, sizeof(rep->transport), "tcp/%s", d.rx_ops->name);
	for (unsigned i = 0; i < MIG_MAX_CHANNELS; i++)
		d.rcv[i] = (struct receiver){.d = &d, .k = i, .conn = MIG_CONN_INIT};
	if (!p->token_len) {
		snprintf(rep->error, sizeof(rep->error), "no migration token");
		return -EINVAL;
	}
	if (lfd < 0) {
		lfd = mig_listen(p->addr, NULL);
		if (lfd < 0) {
			snprintf(rep->error, sizeof(rep->error), "listening on %s: %s", p->addr,
				 strerror(-lfd));
			return lfd;
		}
	}
	/* Told the layout in advance: build the VM (and fault in its RAM) now,
	 * while no source is waiting, rather than inside the migration. */
	struct vm *early = NULL;
	if (p->mem_size && p->nr_vcpus) {
		struct vm_config ec = {.mem_size = p->mem_size,
				       .nr_vcpus = p->nr_vcpus,
				       .backing = p->backing,
				       .dirty_track = p->dirty_track,
				       .hv = p->hv,
				       .prealloc = p->prealloc};
		r = vm_create(&ec, &early);
		if (r) {
			snprintf(rep->error, sizeof(rep->error), "creating the VM: %s",
				 strerror(-r));
			goto out;
		}
	}
	/* Ready: what comes now is the migration itself. */
	log_info("listening for a migration on %s", p->addr ? p->addr : "the given socket");
	if (p->ready)
		__atomic_store_n(p->ready, 1, __ATOMIC_RELEASE);
	/* One control connection that authenticates; others are turned away. */
	for (;;) {
		r = mig_accept(lfd, p->accept_timeout_ms, &ctl);
		if (r) {
			snprintf(rep->error, sizeof(rep->error), "waiting for a source: %s",
				 strerror(-r));
			goto out;
		}
		t_start = now_ns();
		mig_conn_set_timeout(&ctl, p->timeout_ms);
		r = mig_handshake_accept(&ctl, p->token, p->token_len, &hello, check_layout,
					 (void *)p);
		if (!r)
			break;
		log_warn("refused a migration: %s", ctl.why[0] ? ctl.why : strerror(-r));
		snprintf(rep->error, sizeof(rep->error), "%s", ctl.why[0] ? ctl.why : strerror(-r));
		mig_conn_close(&ctl);
		/* A source that cannot authenticate, or whose guest does not fit,
		 * does not get to retry forever on the same listener. */
		goto out;
	}
	d.n = hello.layout.nr_channels;
	d.ctl_fd = ctl.fd;
	d.nr_pages = hello.layout.mem_size / 4096;
	rep->channels = d.n;
	rep->mem_size = hello.layout.mem_size;
	rep->nr_vcpus = hello.layout.nr_vcpus;

	struct vm_config cfg = {.mem_size = hello.layout.mem_size,
				.nr_vcpus = hello.layout.nr_vcpus,
				.backing = p->backing,
				.dirty_track = p->dirty_track,
				.hv = p->hv,
				.prealloc = p->prealloc};
	d.vm = early; /* its layout was checked against the source's */
	early = NULL;
	r = d.vm ? 0 : vm_create(&cfg, &d.vm);
	if (r) {
		snprintf(rep->error, sizeof(rep->error), "creating the VM: %s", strerror(-r));
		mig_send_error(&ctl, r, "destination cannot create the VM: %s", strerror(-r));
		goto out;
	}
	snprintf(rep->dirty_track, sizeof(rep->dirty_track), "%s", d.vm->dirty->name);
	snprintf(rep->backend, sizeof(rep->backend), "%s", d.vm->hv->name);
	d.touched = bitmap_alloc(d.nr_pages);
	d.zeroed = bitmap_alloc(d.nr_pages);
	if (!d.touched || !d.zeroed) {
		r = -ENOMEM;
		goto fail;
	}
	d.lfd = lfd;
	d.hello = hello;
	r = accept_channels(&d, &ctl, &hello);
	if (r)
		goto fail;
	snprintf(rep->transport, sizeof(rep->transport), "tcp/%s", d.rx_ops->name);
	rep->setup_ms = (double)(now_ns() - t_start) / 1e6;

	r = recv_state(&d, &ctl, &rounds);
	if (!r && d.postcopy && !d.uffd) {
		uint64_t t_prep = now_ns();
		r = postcopy_prepare(&d, &ctl);
		log_debug("post-copy: RAM registered with userfaultfd in %.2f ms",
			  (double)(now_ns() - t_prep) / 1e6);
	}
	if (!r && d.memsvc) {
		/* Taking the namespace fences the source off it. */
		struct remote_params rp = {.url = p->memsvc_url ? p->memsvc_url : d.memsvc_url,
					   .token = p->token,
					   .token_len = p->token_len,
					   .cache_bytes = p->cache_bytes,
					   .drop_resident = true,
					   .keep = d.touched,
					   .zeroed = d.zeroed};
		uint64_t t_attach = now_ns();
		r = remote_open(&d.remote, d.vm, &rp);
		log_debug("memsvc: attached in %.2f ms", (double)(now_ns() - t_attach) / 1e6);
		if (r)
			snprintf(ctl.why, sizeof(ctl.why), "taking over memsvc namespace %s: %s",
				 rp.url, strerror(-r));
		else if (p->fail_after_take) {
			r = -ECONNABORTED;
			snprintf(ctl.why, sizeof(ctl.why),
				 "failing after taking the namespace (test)");
		}
	}
	if (r)
		goto fail;
	/* Restored and checked, nothing runs: READY. The guest runs here
	 * only on the source's GO, after which the source never runs its copy
	 * again; without GO this copy goes, and the source's runs on. */
	r = mig_send_rec(&ctl, MIG_REC_READY, NULL, 0);
	if (!r)
		r = mig_recv_expect(&ctl, MIG_REC_GO, NULL, 0);
	if (!r && p->lose_go) {
		shutdown(ctl.fd, SHUT_RDWR);
		snprintf(ctl.why, sizeof(ctl.why), "GO lost on the way (test)");
		r = -ECONNRESET;
	}
	/* The source may have sent GO, and then it never runs its copy
	 * again: it reconnects (as after a break in post-copy) to learn that
	 * this one has not run either, and sends GO again. */
	bool recovered = false;
	while (r && !postcopy_fatal(&d, r)) {
		r = postcopy_recover(&d, &ctl, r, true);
		if (r == -ETIMEDOUT)
			break; /* nobody came back in time */
		if (!r)
			r = mig_recv_expect(&ctl, MIG_REC_GO, NULL, 0);
		recovered = true;
	}
	/* Pre-copy: the recovery's data channels carry nothing more. */
	if (!r && recovered && !d.postcopy)
		receivers_stop(&d);
	if (r) {
		snprintf(ctl.why, sizeof(ctl.why), "waiting for the source's go: %.170s",
			 ctl.why[0] ? ctl.why : strerror(-r));
		goto fail;
	}
	/* From here this is the guest's only copy: it is never dropped. */
	t_complete = now_ns();
	/* Post-copy: RESUMED goes first, because the guest's first fault
	 * sends a PAGE_REQ, which the source reads only after RESUMED. */
	r = p->start_paused || d.postcopy ? 0 : vm_resume(d.vm);
	if (r)
		goto fail;
	struct mig_resumed res = {.restore_ns = now_ns() - t_complete};
	if (p->drop_resumed) {
		/* Tests: RESUMED lost on the way; the source must not run
		 * its copy, and this one runs on. */
		shutdown(ctl.fd, SHUT_RDWR);
	} else if (mig_send_rec(&ctl, MIG_REC_RESUMED, &res, sizeof(res))) {
		log_warn("the guest runs here, but the source could not be told (%s); it keeps "
			 "its copy paused",
			 strerror(errno));
	}
	if (d.postcopy && !p->start_paused) {
		r = vm_resume(d.vm);
		if (r)
			goto fail;
	}
	if (d.postcopy) {
		snprintf(rep->mode, sizeof(rep->mode), "%s", d.discard ? "hybrid" : "postcopy");
		r = postcopy_run(&d, &ctl, rep);
		if (r)
			goto fail;
		for (unsigned i = 0; i < d.n; i++) {
			pthread_join(d.rcv[i].thread, NULL);
			d.rcv[i].started = false;
		}
	} else {
		if (d.memsvc) {
			snprintf(rep->mode, sizeof(rep->mode), "memsvc");
			uint64_t t_hot = now_ns();
			r = remote_prefetch(d.remote, d.hot, d.nr_hot);
			rep->hot_pages = d.nr_hot;
			log_debug("memsvc: %u hot pages read in %.1f ms (%s)", d.nr_hot,
				  (double)(now_ns() - t_hot) / 1e6, r ? strerror(-r) : "ok");
			r = 0; /* a page the prefetch missed comes when touched */
		}
		send_guest_stall(d.vm, &ctl, !p->start_paused, -1);
	}
	snprintf(rep->status, sizeof(rep->status), "completed");
	rep->rounds = rounds;
	rep->restore_ms = (double)res.restore_ns / 1e6;
	rep->total_ms = (double)(now_ns() - t_start) / 1e6;
	rep->bytes = ctl.rx_bytes + d.rx_before;
	rep->recoveries = d.recoveries;
	rep->push_yields = d.push_yields;
	for (unsigned i = 0; i < d.n; i++) {
		rep->bytes += d.rcv[i].conn.rx_bytes;
		rep->pages_sent += d.rcv[i].pages;
		rep->zero_pages += d.rcv[i].zero_pages;
		mig_conn_close(&d.rcv[i].conn);
		free(d.rcv[i].buf);
	}
	mig_conn_close(&ctl);
	free(d.touched);
	free(d.zeroed);
	free(d.discard);
	free(d.hot);
	if (p->listen_fd < 0)
		close(lfd);
	*out = d.vm;
	if (p->remote_out)
		*p->remote_out = d.remote;
	else if (d.remote)
		log_warn("memsvc-backed guest arrived but nobody keeps its remote memory");
	pthread_cond_destroy(&d.cond);
	pthread_mutex_destroy(&d.lock);
	return 0;

fail:
	if (!rep->error[0])
		snprintf(rep->error, sizeof(rep->error), "%s", ctl.why[0] ? ctl.why : strerror(-r));
	mig_send_error(&ctl, r, "destination: %s", rep->error);
	receivers_stop(&d);
	d.abort = 1;
	for (unsigned i = 0; i < d.n; i++)
		free(d.rcv[i].buf);
	/* Post-copy broke: vCPUs blocked on missing pages wake when the
	 * range is unregistered, and the VM goes. */
	if (d.uffd) {
		uffd_close(d.uffd);
		free(d.uffd);
		d.uffd = NULL;
	}
	if (d.remote) {
		vm_pause(d.vm);
		remote_close(d.remote);
	}
	vm_destroy(d.vm);
	free(d.hot);
	free(d.touched);
	free(d.zeroed);
	free(d.discard);
out:
	vm_destroy(early);
	mig_conn_close(&ctl);
	if (p->listen_fd < 0 && lfd >= 0)
		close(lfd);
	pthread_cond_destroy(&d.cond);
	pthread_mutex_destroy(&d.lock);
	return r;
}

static void *dest_thread_main(void *arg)
{
	struct mig_dest_thread *t = arg;

	thread_name("mig-dest");
	t->r = mig_dest_run(&t->p, &t->vm, &t->rep);
	return NULL;
}

int mig_dest_spawn(struct mig_dest_thread *t)
{
	t->vm = NULL;
	t->r = -EINPROGRESS;
	return -pthread_create(&t->thread, NULL, dest_thread_main, t);
}

void mig_dest_join(struct mig_dest_thread *t)
{
	pthread_join(t->thread, NULL);
}
