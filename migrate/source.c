// SPDX-License-Identifier: MIT
/*
 * The source side of a pre-copy migration.
 *
 * Threads: the caller's thread runs the session (rounds, policy, final
 * copy); one sender thread per data channel sends the pages of its 2 MiB
 * chunks (chunk % channels), so a page always travels on the same connection
 * and a newer copy can never overtake an older one; a throttle thread pauses
 * and resumes the vCPUs when auto-converge asks for it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "common/bitmap.h"
#include "common/log.h"
#include "common/util.h"
#include "conn.h"
#include "handshake.h"
#include "migrate.h"
#include "policy.h"
#include "transport/transport.h"
#include "vmm/dirty.h"
#include "vmm/hv.h"
#include "vmm/remote.h"
#include "vmm/vm.h"

#define CHUNK_PAGES 512 /* 2 MiB: the unit of channel assignment */

struct src;

struct sender {
	struct src *s;
	unsigned k; /* 0-based data channel */
	struct mig_conn conn;
	pthread_t thread;
	bool started;
	/* this round's counts, written by the sender, read after the barrier */
	uint64_t pages, zero_pages, resent, bytes;
	/* the counts when this connection was made (END counts from there) */
	uint64_t pages0, zero_pages0;
	int err;
};

struct src {
	struct vm *vm;
	const struct mig_params *p;
	uint64_t nr_pages;
	uint64_t *todo; /* this round's pages; read-only while senders run */
	uint64_t *sent; /* pages sent at least once; each sender owns its chunks */
	/* memsvc, cache sent: pages of a round that were no longer here to
	 * send (evicted: memsvc has them), so the destination's copy, if it
	 * has one, is stale until one is sent again; each sender owns its
	 * chunks' words */
	uint64_t *stale;
	/* The boot area (below VM_UNTRACKED_BYTES, never dirty-logged) as the
	 * destination has it: copied once before round 1, which sends it from
	 * this copy, so that the paused round sends only the pages that differ
	 * from it instead of all of them. Set during round 1 only. */
	uint8_t *boot;
	uint64_t boot_pages;
	/* The copy's pages hashed (keyed by boot_key, a random number of this
	 * migration's), for the paused round (no hashes: the pages go whole).
	 * The copy itself is freed after round 1: comparing with it there read
	 * 256 cold pages, 11-14 ms on this nested host after the destination
	 * had mapped gigabytes. */
	uint64_t boot_hash[VM_UNTRACKED_BYTES / 4096], boot_key;
	bool boot_hashed;
	/* The paused round's bitmaps, allocated and touched before the pause
	 * (a first touch is slow on this nested host) and written every round
	 * (so is memory left cold). more: memsvc's dirty pages (mode memsvc
	 * only); spare: a hybrid switch's or a memsvc hand-over's DISCARD
	 * (taken by whoever uses it). */
	uint64_t *more, *spare;
	struct sender snd[MIG_MAX_CHANNELS];
	unsigned n;
	struct mig_conn *ctl; /* the session thread's only */

	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t gen;	  /* round generation: senders start when it moves */
	unsigned running; /* senders still working on this round */
	bool quit;
	bool final;	/* this round is the last: send END after it */
	uint32_t round; /* this round's number, for its MARK */
	/* post-copy: page requests being answered; the push gives way */
	uint32_t pending;
	bool postcopy;		   /* past the switch: a sender's error breaks the control
				      connection too, so that the session sees it at once */
	uint64_t t_switch, t_done; /* post-copy: the switch, every page in */
	uint64_t hot;		   /* memsvc: hot pages named to the destination */
	uint8_t session[16];
	uint64_t tx_before; /* bytes sent on connections since closed */
	/* the policy's post-copy choices: the push's chunk order (NULL: guest
	 * order), pages sent along with a fault's answer, and what the rounds
	 * saw written per chunk (for the order) */
	const struct mig_policy_ops *pol;
	uint64_t *order;
	uint32_t prefetch;
	uint32_t *chunk_round;
	uint16_t *chunk_written;

	/* throttle */
	pthread_t throttle_thread;
	bool throttle_started;
	uint32_t throttle_pct; /* protected by lock */
	bool throttle_quit;    /* (lock; the thread waits on cond, so it is woken at once) */
	bool throttle_paused;  /* it quit with the vCPUs paused (lock) */
};

void mig_params_default(struct mig_params *p)
{
	memset(p, 0, sizeof(*p));
	p->channels = 2;
	p->downtime_limit_ms = 20;
	p->max_rounds = 30;
	p->auto_converge = true;
	p->timeout_ms = 10000;
	p->recover_ms = 60000;
}

static const char *const mode_names[] = {
    [MIG_MODE_PRECOPY] = "precopy",
    [MIG_MODE_POSTCOPY] = "postcopy",
    [MIG_MODE_HYBRID] = "hybrid",
    [MIG_MODE_MEMSVC] = "memsvc",
};

const char *mig_mode_name(enum mig_mode m)
{
	return (unsigned)m < ARRAY_SIZE(mode_names) ? mode_names[m] : "?";
}

int mig_mode_parse(const char *name)
{
	for (unsigned i = 0; i < ARRAY_SIZE(mode_names); i++)
		if (!strcmp(name, mode_names[i]))
			return (int)i;
	return -1;
}

static const char *const memsvc_cache_names[] = {
    [MIG_MEMSVC_SEND] = "send",
    [MIG_MEMSVC_WRITEBACK] = "writeback",
};

const char *mig_memsvc_cache_name(enum mig_memsvc_cache c)
{
	return (unsigned)c < ARRAY_SIZE(memsvc_cache_names) ? memsvc_cache_names[c] : "?";
}

int mig_memsvc_cache_parse(const char *name)
{
	for (unsigned i = 0; i < ARRAY_SIZE(memsvc_cache_names); i++)
		if (!strcmp(name, memsvc_cache_names[i]))
			return (int)i;
	return -1;
}

static bool cancelled(const struct src *s)
{
	return s->p->cancel && __atomic_load_n(s->p->cancel, __ATOMIC_RELAXED);
}

/* Keeps a channel under its share of the bandwidth cap. */
static void pace(struct sender *t, uint64_t t0, uint64_t bytes)
{
	uint64_t limit = t->s->p->bandwidth_limit / t->s->n;

	if (!limit)
		return;
	uint64_t due = t0 + bytes * 1000000000ULL / limit, now = now_ns();
	if (due > now) {
		struct timespec ts = {.tv_sec = (time_t)((due - now) / 1000000000ULL),
				      .tv_nsec = (long)((due - now) % 1000000000ULL)};
		nanosleep(&ts, NULL);
	}
}

/* During a post-copy push the session thread takes pages out of todo (the
 * ones it sends along with a fault's answer) while senders read it. */
static bool todo_test(const struct src *s, uint64_t g)
{
	return __atomic_load_n(&s->todo[g / 64], __ATOMIC_RELAXED) & (1ULL << (g % 64));
}

/* The first page of [g, end) in this round, or end: a word at a time (a
 * round of a few dirty pages in a large guest was a bit at a time, a
 * millisecond of the downtime at 4 GiB). */
static uint64_t todo_next(const struct src *s, uint64_t g, uint64_t end)
{
	while (g < end) {
		uint64_t w = __atomic_load_n(&s->todo[g / 64], __ATOMIC_RELAXED) >> (g % 64);
		if (w)
			return MIN(g + (uint64_t)__builtin_ctzll(w), end);
		g = (g / 64 + 1) * 64;
	}
	return end;
}

/* Post-copy: takes page g out of the push; true if it was still in it
 * (then the caller sends it: a fault's answer, a prefetch and the push
 * never all send the same page). */
static bool todo_claim(struct src *s, uint64_t g)
{
	uint64_t m = 1ULL << (g % 64);
	return __atomic_fetch_and(&s->todo[g / 64], ~m, __ATOMIC_RELAXED) & m;
}

/* A run [g, end) went: count it. */
static void sent_run(struct sender *t, uint64_t g, uint64_t end)
{
	struct src *s = t->s;

	for (uint64_t x = g; x < end; x++) {
		if (bitmap_test(s->sent, x))
			t->resent++;
		else
			bitmap_set(s->sent, x);
		if (s->stale)
			bitmap_clear(s->stale, x);
	}
	__atomic_store_n(&t->pages, t->pages + (end - g), __ATOMIC_RELAXED);
	__atomic_store_n(&t->bytes,
			 t->bytes + sizeof(struct mig_pages) + (end - g) * 4096 +
			     sizeof(struct mig_rec_hdr),
			 __ATOMIC_RELAXED);
}

/* A zeroed bitmap of nbits whose every page is faulted in now. */
static uint64_t *bitmap_ready(uint64_t nbits)
{
	uint64_t *m = bitmap_alloc(nbits);

	for (size_t i = 0; m && i < BITMAP_WORDS(nbits) * 8; i += 4096)
		((volatile uint8_t *)m)[i] = 0;
	return m;
}

/* A keyed 64-bit hash of a page (four lanes of multiply-xor, then mixed):
 * a guest cannot make two versions of a page collide without the key. */
static uint64_t page_hash(const void *page, uint64_t key)
{
	const uint64_t *w = page;
	uint64_t h[4] = {key, key ^ 0x9e3779b97f4a7c15ULL, key ^ 0xbf58476d1ce4e5b9ULL,
			 key ^ 0x94d049bb133111ebULL};

	for (unsigned i = 0; i < 512; i += 4)
		for (unsigned j = 0; j < 4; j++)
			h[j] = (h[j] ^ w[i + j]) * 0x9fb21c651e98df25ULL + (h[j] >> 29);
	uint64_t x = h[0] ^ (h[1] * 0xff51afd7ed558ccdULL) ^ (h[2] * 0xc4ceb9fe1a85ec53ULL) ^
		     (h[3] * 0xd6e8feb86659fd93ULL);
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	return x ^ (x >> 33);
}

/* Where page g is sent from: guest RAM, or the boot area's copy. */
static const uint8_t *page_src(const struct src *s, uint64_t g)
{
	return s->boot && g < s->boot_pages ? s->boot + g * 4096
					    : s->vm->mem.regions[0].hva + g * 4096;
}

static int send_chunk(struct sender *t, uint64_t chunk, uint64_t t0, uint64_t b0)
{
	struct src *s = t->s;
	uint64_t first = chunk * CHUNK_PAGES, end = MIN(first + CHUNK_PAGES, s->nr_pages);
	uint64_t zero[CHUNK_PAGES / 64] = {0}, nzero = 0;
	int r;

	for (uint64_t g = todo_next(s, first, end); g < end; g = todo_next(s, g, end)) {
		if (s->postcopy && !todo_claim(s, g)) {
			g++;
			continue;
		}
		/* memsvc: a page evicted since is not fetched back to be sent;
		 * memsvc has it. */
		if (s->stale && !remote_page_resident(s->p->remote, g)) {
			bitmap_set(s->stale, g);
			g++;
			continue;
		}
		/* A run of dirty, non-zero pages, at most MIG_MAX_RUN_PAGES,
		 * from one place (the boot area's copy, or guest RAM). */
		if (page_is_zero(page_src(s, g))) {
			bitmap_set(zero, g - first);
			nzero++;
			if (s->stale)
				bitmap_clear(s->stale, g);
			g++;
			continue;
		}
		uint64_t run = g + 1;
		while (run < end && run - g < MIG_MAX_RUN_PAGES && todo_test(s, run) &&
		       (!s->boot || run != s->boot_pages) &&
		       (!s->stale || remote_page_resident(s->p->remote, run)) &&
		       !page_is_zero(page_src(s, run)) && (!s->postcopy || todo_claim(s, run)))
			run++;
		/* Straight from guest RAM: the guest keeps writing while we
		 * send, and a page it changes is dirty and goes again next
		 * round (in the last one the vCPUs are stopped). With
		 * checksummed pages they are copied first, so that the
		 * checksum matches what goes on the wire. */
		/* Post-copy: a page request being answered goes first. */
		for (int i = 0; i < 50 && __atomic_load_n(&s->pending, __ATOMIC_RELAXED); i++)
			usleep(20);
		r = mig_send_pages(&t->conn, g, page_src(s, g), (uint32_t)(run - g),
				   s->p->checksum_pages);
		if (r)
			return r;
		sent_run(t, g, run);
		pace(t, t0, t->bytes - b0);
		g = run;
	}
	if (nzero) {
		struct mig_zero zh = {.gfn = first, .count = (uint32_t)(end - first)};
		struct iovec iov[2] = {{&zh, sizeof(zh)}, {zero, BITMAP_WORDS(end - first) * 8}};
		r = mig_send_iov(&t->conn, MIG_REC_ZERO, iov, 2);
		if (r)
			return r;
		t->zero_pages += nzero;
		t->bytes += sizeof(zh) + BITMAP_WORDS(end - first) * 8 + sizeof(struct mig_rec_hdr);
	}
	return 0;
}

static int send_round(struct sender *t)
{
	struct src *s = t->s;
	uint64_t chunks = (s->nr_pages + CHUNK_PAGES - 1) / CHUNK_PAGES, t0 = now_ns();
	uint64_t b0 = t->bytes; /* the cap paces this round's bytes from its start */

	/* This channel's chunks, in the policy's order if it has one. */
	for (uint64_t i = s->order ? 0 : t->k; i < chunks; i += s->order ? 1 : s->n) {
		uint64_t c = s->order ? s->order[i] : i;
		if (c % s->n != t->k)
			continue;
		if (cancelled(s))
			return -ECANCELED;
		int r = send_chunk(t, c, t0, b0);
		if (r)
			return r;
	}
	return 0;
}

static void *sender_thread(void *arg)
{
	struct sender *t = arg;
	struct src *s = t->s;
	uint64_t seen = 0;

	thread_name("mig-send-%u", t->k);
	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (s->gen == seen && !s->quit)
			pthread_cond_wait(&s->cond, &s->lock);
		if (s->quit)
			break;
		seen = s->gen;
		bool final = s->final;
		struct mig_mark mark = {.round = s->round};
		pthread_mutex_unlock(&s->lock);
		int r = t->err ? t->err : send_round(t);
		if (!r && final) {
			struct mig_end e = {.pages = t->pages - t->pages0,
					    .zero_pages = t->zero_pages - t->zero_pages0};
			r = mig_send_rec(&t->conn, MIG_REC_END, &e, sizeof(e));
		} else if (!r) {
			r = mig_send_rec(&t->conn, MIG_REC_MARK, &mark, sizeof(mark));
		}
		/* A round ends with its pages on their way, not in a buffer. */
		if (!r)
			r = mig_conn_flush(&t->conn);
		pthread_mutex_lock(&s->lock);
		if (r && !t->err)
			t->err = r;
		if (r && s->postcopy && s->ctl->fd >= 0)
			shutdown(s->ctl->fd, SHUT_RDWR);
		if (--s->running == 0)
			pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Starts a round on every sender without waiting for it (post-copy's
 * background push; run_round waits). */
static void round_begin(struct src *s, uint32_t round, bool final)
{
	pthread_mutex_lock(&s->lock);
	s->final = final;
	s->round = round;
	s->running = s->n;
	s->gen++;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

/* Runs one round on every sender; returns the first error. */
static int run_round(struct src *s, uint32_t round, bool final, uint64_t *pages, uint64_t *bytes)
{
	uint64_t p0 = 0, b0 = 0, p1 = 0, b1 = 0;
	int err = 0;

	for (unsigned i = 0; i < s->n; i++) {
		p0 += s->snd[i].pages + s->snd[i].zero_pages;
		b0 += s->snd[i].bytes;
	}
	round_begin(s, round, final);
	pthread_mutex_lock(&s->lock);
	uint64_t next_beat = now_ns() + 1000000000ULL;
	while (s->running) {
		struct timespec dl;
		clock_gettime(CLOCK_MONOTONIC, &dl);
		dl.tv_nsec += 200000000L;
		if (dl.tv_nsec >= 1000000000L) {
			dl.tv_sec++;
			dl.tv_nsec -= 1000000000L;
		}
		if (pthread_cond_timedwait(&s->cond, &s->lock, &dl) != ETIMEDOUT || !s->running)
			continue;
		/* A long round: show progress (the counters are the senders';
		 * a slightly stale read is fine) and keep the control channel
		 * alive for the destination. */
		uint64_t sent = 0, nbytes = 0;
		for (unsigned i = 0; i < s->n; i++) {
			sent += __atomic_load_n(&s->snd[i].pages, __ATOMIC_RELAXED);
			nbytes += __atomic_load_n(&s->snd[i].bytes, __ATOMIC_RELAXED);
		}
		if (s->p->progress) {
			__atomic_store_n(&s->p->progress->pages_sent, sent, __ATOMIC_RELAXED);
			__atomic_store_n(&s->p->progress->bytes, nbytes, __ATOMIC_RELAXED);
		}
		if (now_ns() >= next_beat && !err) {
			next_beat += 1000000000ULL;
			pthread_mutex_unlock(&s->lock);
			err = mig_send_rec(s->ctl, MIG_REC_HEARTBEAT, &sent, sizeof(sent));
			pthread_mutex_lock(&s->lock);
		}
	}
	pthread_mutex_unlock(&s->lock);
	for (unsigned i = 0; i < s->n; i++) {
		p1 += s->snd[i].pages + s->snd[i].zero_pages;
		b1 += s->snd[i].bytes;
		if (s->snd[i].err)
			err = s->snd[i].err;
	}
	*pages = p1 - p0;
	*bytes = b1 - b0;
	return err;
}

/* Waits on cond (lock held) until ns from now or a quit. */
static void throttle_wait(struct src *s, uint64_t ns)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t end = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec + ns;
	ts = (struct timespec){.tv_sec = (time_t)(end / 1000000000ULL),
			       .tv_nsec = (long)(end % 1000000000ULL)};
	while (!s->throttle_quit && pthread_cond_timedwait(&s->cond, &s->lock, &ts) != ETIMEDOUT)
		;
}

/* Auto-converge: vCPUs run (100 - pct) % and pause pct % of every 20 ms.
 * Told to quit, it stops at once: a quit in the paused part leaves the
 * vCPUs paused (throttle_paused), so the stop-and-copy does not wait for a
 * period to end while the guest dirties more pages for the downtime. */
static void *throttle_thread(void *arg)
{
	struct src *s = arg;
	const uint64_t period = 20000000ULL;

	thread_name("mig-throttle");
	pthread_mutex_lock(&s->lock);
	while (!s->throttle_quit) {
		uint32_t pct = s->throttle_pct;
		if (pct) {
			pthread_mutex_unlock(&s->lock);
			vm_pause(s->vm);
			pthread_mutex_lock(&s->lock);
			throttle_wait(s, period * pct / 100);
			if (s->throttle_quit) {
				s->throttle_paused = true;
				break;
			}
			pthread_mutex_unlock(&s->lock);
			vm_resume(s->vm);
			pthread_mutex_lock(&s->lock);
		}
		throttle_wait(s, period * (100 - pct) / 100);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Stops the throttle at once. keep_paused: the caller pauses the vCPUs
 * next (the stop-and-copy), so vCPUs the throttle left paused stay so
 * (then true); otherwise they run again. */
static bool throttle_stop(struct src *s, bool keep_paused)
{
	bool left_paused;

	if (!s->throttle_started)
		return false;
	pthread_mutex_lock(&s->lock);
	s->throttle_quit = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->throttle_thread, NULL);
	s->throttle_started = false;
	left_paused = s->throttle_paused && keep_paused;
	if (s->throttle_paused && !keep_paused)
		vm_resume(s->vm);
	s->throttle_paused = false;
	return left_paused;
}

static void senders_stop(struct src *s)
{
	pthread_mutex_lock(&s->lock);
	s->quit = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	for (unsigned i = 0; i < s->n; i++)
		if (s->snd[i].started)
			pthread_join(s->snd[i].thread, NULL);
}

static void src_free(struct src *s)
{
	free(s->boot);
	free(s->more);
	free(s->spare);
	free(s->todo);
	free(s->sent);
	free(s->stale);
	free(s->order);
	free(s->chunk_round);
	free(s->chunk_written);
}

/* For a policy's push order: which chunks a round saw written, and how much. */
static void note_writes(struct src *s, const uint64_t *dirty, uint32_t round)
{
	uint64_t g;

	if (!s->chunk_round)
		return;
	bitmap_for_each_set(g, dirty, s->nr_pages)
	{
		uint64_t c = g / CHUNK_PAGES;
		if (s->chunk_round[c] != round) {
			s->chunk_round[c] = round;
			s->chunk_written[c] = 0;
		}
		s->chunk_written[c]++;
	}
}

/* The post-copy push's chunk order, if the policy has one. */
static int push_order(struct src *s)
{
	uint64_t chunks = (s->nr_pages + CHUNK_PAGES - 1) / CHUNK_PAGES;

	if (!s->pol->push_order)
		return 0;
	s->order = malloc(chunks * sizeof(*s->order));
	if (!s->order)
		return -ENOMEM;
	struct mig_push_hint h = {
	    .nr_chunks = chunks, .last_round = s->chunk_round, .written = s->chunk_written};
	s->pol->push_order(s->p, &h, s->order);
	/* Every chunk exactly once, or the push would lose pages. */
	uint64_t *seen = bitmap_alloc(chunks);
	int r = seen ? 0 : -ENOMEM;
	for (uint64_t i = 0; i < chunks && !r; i++) {
		if (s->order[i] >= chunks || bitmap_test(seen, s->order[i]))
			r = -EINVAL;
		else
			bitmap_set(seen, s->order[i]);
	}
	free(seen);
	if (r == -EINVAL)
		log_err("policy %s: its push order is not every chunk once", s->pol->name);
	return r;
}

static void fill_report_static(struct mig_report *rep, const struct vm *vm,
			       const struct mig_params *p)
{
	memset(rep, 0, sizeof(*rep));
	rep->guest_stall_ms = -1;
	rep->tail_speed_pct = -1;
	rep->paused_at_ms = rep->resumed_at_ms = -1;
	snprintf(rep->mode, sizeof(rep->mode), "%s", mig_mode_name(p->mode));
	snprintf(rep->status, sizeof(rep->status), "failed");
	snprintf(rep->transport, sizeof(rep->transport), "tcp");
	snprintf(rep->dirty_track, sizeof(rep->dirty_track), "%s", vm->dirty->name);
	snprintf(rep->backend, sizeof(rep->backend), "%s", vm->hv->name);
	rep->channels = p->channels;
	rep->page_checksums = p->checksum_pages;
	rep->mem_size = vm->mem.size;
	rep->nr_vcpus = vm->nr_vcpus;
	if (p->mode == MIG_MODE_MEMSVC)
		snprintf(rep->memsvc_cache, sizeof(rep->memsvc_cache), "%s",
			 mig_memsvc_cache_name(p->memsvc_cache));
}

/* FLIT_MIGRATION_CAPTURE=DIR: what the source sends on connection i goes to
 * DIR/channel-i.bin too, for flit-dump. */
static void capture_open(struct mig_conn *c, unsigned i)
{
	const char *dir = getenv("FLIT_MIGRATION_CAPTURE");
	char path[4096];

	if (!dir || !*dir)
		return;
	snprintf(path, sizeof(path), "%s/channel-%u.bin", dir, i);
	c->capture_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (c->capture_fd < 0)
		log_warn("capture %s: %s", path, strerror(errno));
}

#define PROGRESS_SET(p, field, v)                                                       \
	do {                                                                            \
		if ((p)->progress)                                                      \
			__atomic_store_n(&(p)->progress->field, (v), __ATOMIC_RELAXED); \
	} while (0)

/* Data channels send through p->transport; by default through io_uring,
 * or plain sends where this kernel has no io_uring (or it is disabled). */
static int attach_transport(struct mig_conn *c, const struct mig_params *p, struct mig_report *rep)
{
	const struct transport_ops *ops = p->transport ? p->transport : &transport_uring;
	int r = mig_conn_attach(c, ops, p->timeout_ms);

	if (r && !p->transport) {
		log_info("io_uring transport unavailable (%s): plain sends", strerror(-r));
		ops = &transport_sync;
		r = mig_conn_attach(c, ops, p->timeout_ms);
	}
	if (r) {
		snprintf(rep->error, sizeof(rep->error), "%s transport: %s", ops->name,
			 strerror(-r));
		return r;
	}
	snprintf(rep->transport, sizeof(rep->transport), "tcp/%s", ops->name);
	return 0;
}

/* The control connection (a new one for the same session if recover) and
 * the data channels, each authenticated. */
static int connect_all(struct src *s, struct mig_conn *ctl, const char *addr, bool recover,
		       struct mig_report *rep)
{
	const struct mig_params *p = s->p;
	struct mig_hello h = {.role = MIG_ROLE_CONTROL};
	struct hv_caps caps;
	int r;

	s->vm->hv->vm_caps(s->vm->hv_vm, &caps);
	h.layout = (struct mig_layout){.mem_size = s->vm->mem.size,
				       .nr_vcpus = s->vm->nr_vcpus,
				       .page_size = 4096,
				       .xsave_size = 0,
				       .nr_channels = p->channels};
	memcpy(h.session, s->session, sizeof(h.session));
	ctl->fd = -1;
	for (unsigned i = 0; i <= p->channels; i++) {
		struct mig_conn *c = i ? &s->snd[i - 1].conn : ctl;
		h.role = i ? MIG_ROLE_DATA : recover ? MIG_ROLE_RECOVER : MIG_ROLE_CONTROL;
		h.channel = i;
		r = mig_random(h.nonce, sizeof(h.nonce));
		if (!r)
			r = mig_connect(addr, p->timeout_ms, c);
		if (r) {
			snprintf(rep->error, sizeof(rep->error), "connecting to %s: %s", addr,
				 strerror(-r));
			return r;
		}
		mig_conn_set_timeout(c, p->timeout_ms);
		capture_open(c, i);
		r = mig_handshake_connect(c, p->token, p->token_len, &h);
		if (r) {
			snprintf(rep->error, sizeof(rep->error), "handshake on channel %u: %s", i,
				 c->why[0] ? c->why : strerror(-r));
			return r;
		}
		if (i) {
			r = attach_transport(c, p, rep);
			if (r)
				return r;
		}
	}
	return 0;
}

/* The namespace and the hot pages (the resident ones, newest first: the
 * destination reads them in that order after it resumes). */
static int send_memsvc(struct src *s, struct mig_conn *ctl)
{
	struct mig_memsvc m = {.epoch = remote_epoch(s->p->remote)};
	uint64_t *hot = calloc(MIG_MEMSVC_MAX_HOT, sizeof(*hot));

	if (!hot)
		return -ENOMEM;
	if (strlen(remote_url(s->p->remote)) >= sizeof(m.url)) {
		snprintf(ctl->why, sizeof(ctl->why), "memsvc address longer than %zu bytes",
			 sizeof(m.url) - 1);
		free(hot);
		return -ENAMETOOLONG;
	}
	snprintf(m.url, sizeof(m.url), "%s", remote_url(s->p->remote));
	/* The cache went to the destination already: no list to read. */
	if (s->p->memsvc_cache == MIG_MEMSVC_WRITEBACK)
		m.nr_hot = (uint32_t)remote_hot(s->p->remote, hot, MIG_MEMSVC_MAX_HOT);
	/* Newest first: the pages the guest wrote lately have been sent to
	 * the back of the line (second chance), and they are the ones it
	 * will touch first at the destination. */
	for (uint32_t i = 0; i < m.nr_hot / 2; i++) {
		uint64_t t = hot[i];
		hot[i] = hot[m.nr_hot - 1 - i];
		hot[m.nr_hot - 1 - i] = t;
	}
	s->hot = m.nr_hot;
	struct iovec iov[2] = {{&m, sizeof(m)}, {hot, (size_t)m.nr_hot * 8}};
	int r = mig_send_iov(ctl, MIG_REC_MEMSVC, iov, 2);
	free(hot);
	return r;
}

/* memsvc, cache sent: round 1 is the pages resident here. */
static int memsvc_cached(struct src *s)
{
	uint64_t *gfn = calloc(s->nr_pages, sizeof(*gfn));

	if (!gfn)
		return -ENOMEM;
	uint64_t n = remote_hot(s->p->remote, gfn, s->nr_pages);
	memset(s->todo, 0, BITMAP_WORDS(s->nr_pages) * 8);
	for (uint64_t i = 0; i < n; i++)
		if (gfn[i] < s->nr_pages)
			bitmap_set(s->todo, gfn[i]);
	free(gfn);
	return 0;
}

/* memsvc: the rounds write back what the guest wrote (to memsvc, not to
 * the destination) until what is left would fit the downtime limit. */
static int memsvc_rounds(struct src *s, struct mig_report *rep, uint64_t t_start, uint32_t *round)
{
	const struct mig_params *p = s->p;
	bool first = true;

	PROGRESS_SET(p, phase, MIG_PHASE_ITERATE);
	for (;;) {
		uint64_t t0 = now_ns(), n = 0;
		/* Round 1 stores every page never stored; later rounds what
		 * the dirty log says changed. The pages stay writable: the log
		 * sees the guest's next write in the kernel, where a write
		 * protection would stop it for a round trip to userspace. */
		int r = remote_flush(p->remote, first ? NULL : s->todo, &n);
		if (r) {
			snprintf(rep->error, sizeof(rep->error), "writing back to memsvc: %s",
				 strerror(-r));
			return r;
		}
		first = false;
		memset(s->todo, 0, BITMAP_WORDS(s->nr_pages) * 8);
		r = vm_dirty_collect(s->vm, s->todo);
		if (r)
			return r;
		++*round;
		double secs = (double)(now_ns() - t0) / 1e9;
		uint64_t dirty = bitmap_weight(s->todo, s->nr_pages);
		rep->written_back += n;
		if (rep->nr_timeline < MIG_TIMELINE_MAX)
			rep->timeline[rep->nr_timeline++] =
			    (struct mig_round_rec){.start_ms = (double)(t0 - t_start) / 1e6,
						   .end_ms = (double)(now_ns() - t_start) / 1e6,
						   .pages = n,
						   .bytes = n * 4096,
						   .dirty_pages = dirty};
		PROGRESS_SET(p, round, *round);
		PROGRESS_SET(p, dirty_pages, dirty);
		log_debug(
		    "memsvc round %u: %llu pages written back in %.1f ms, %llu written meanwhile",
		    *round, (unsigned long long)n, secs * 1e3, (unsigned long long)dirty);
		if (cancelled(s))
			return -ECANCELED;
		/* What is dirty now, at this round's write-back rate. Another
		 * round pays only if the guest wrote clearly less than this one
		 * wrote back (else it dirties as fast as rounds clean). */
		double est_ms = n && secs > 0 ? (double)dirty * secs * 1e3 / (double)n : 0;
		if (dirty < 64 || est_ms <= p->downtime_limit_ms || *round >= p->max_rounds ||
		    (*round > 1 && (double)dirty > 0.8 * (double)n))
			return 0;
	}
}

/* DISCARD records: the bitmap's words that have a bit set, in spans (runs
 * of fewer than DISCARD_GAP zero words go along): in the downtime a hot
 * set's stale pages cost a few KiB, not a bit for every page of RAM (128 KiB
 * at 4 GiB). At least one record: it says the switch is a hybrid's. */
#define DISCARD_GAP 8
static int send_discard(struct mig_conn *ctl, const uint64_t *discard, uint64_t nr_pages)
{
	uint64_t words = BITMAP_WORDS(nr_pages), w = 0, sent = 0;
	int r = 0;

	while (!r) {
		while (w < words && !discard[w])
			w++;
		if (w == words && sent)
			break;
		uint64_t first = MIN(w, words - 1), end = first + 1, gap = 0;
		for (w = end; w < words && gap < DISCARD_GAP; w++) {
			gap = discard[w] ? 0 : gap + 1;
			if (!gap)
				end = w + 1;
		}
		w = end;
		struct mig_discard dh = {.gfn = first * 64,
					 .count = (uint32_t)(MIN(end * 64, nr_pages) - first * 64)};
		struct iovec iov[2] = {{&dh, sizeof(dh)},
				       {(void *)(discard + first), (end - first) * 8}};
		r = mig_send_iov(ctl, MIG_REC_DISCARD, iov, 2);
		sent++;
	}
	return r;
}

static int send_state(struct src *s, struct mig_conn *ctl, uint32_t rounds, bool postcopy,
		      const uint64_t *discard)
{
	struct vm *vm = s->vm;
	struct x86_cpu_state *st = calloc(vm->nr_vcpus, sizeof(*st));
	struct x86_vm_state vmst;
	size_t dsz = vm_devices_state_size(vm);
	void *devs = malloc(dsz);
	int r = !st || !devs ? -ENOMEM : vm_save_cpus(vm, st, &vmst);

	for (uint32_t i = 0; i < vm->nr_vcpus && !r; i++) {
		struct mig_cpu h = {.index = i, .size = sizeof(st[i])};
		struct iovec iov[2] = {{&h, sizeof(h)}, {&st[i], sizeof(st[i])}};
		r = mig_send_iov(ctl, MIG_REC_CPU, iov, 2);
	}
	if (!r)
		r = mig_send_rec(ctl, MIG_REC_VMSTATE, &vmst, sizeof(vmst));
	if (!r) {
		vm_save_devices(vm, devs);
		r = mig_send_rec(ctl, MIG_REC_DEVICES, devs, (uint32_t)dsz);
	}
	if (!r && discard)
		r = send_discard(ctl, discard, s->nr_pages);
	if (!r && postcopy) {
		struct mig_postcopy pc = {.flags = s->pol->push_yields ? MIG_POSTCOPY_F_YIELD : 0};
		r = mig_send_rec(ctl, MIG_REC_POSTCOPY, &pc, sizeof(pc));
	}
	if (!r && s->p->mode == MIG_MODE_MEMSVC)
		r = send_memsvc(s, ctl);
	if (!r) {
		struct mig_complete c = {.rounds = rounds, .nr_cpus = vm->nr_vcpus};
		r = mig_send_rec(ctl, MIG_REC_COMPLETE, &c, sizeof(c));
	}
	free(st);
	free(devs);
	return r;
}

/* After a fault's answer: the next s->prefetch pages that the push has not
 * sent, taken out of the push and sent on the control connection: the
 * non-zero ones in records of PREFETCH_RUN pages, the zero ones as one
 * ZERO record at the end (a guest that touches fresh memory faults on
 * zeros). The data channels are no place for them: megabytes of push wait
 * in their socket buffers. After the first record, a request that comes
 * meanwhile stops it: its answer then waits behind one small record at
 * most, and the rest stays with the push. */
#define PREFETCH_RUN 8
static int prefetch(struct src *s, struct mig_conn *ctl, uint64_t gfn, uint64_t *sent)
{
	uint8_t *ram = s->vm->mem.regions[0].hva;
	uint64_t start = gfn, end = MIN(gfn + s->prefetch, s->nr_pages), first = *sent, zero = 0;
	int r = 0;

	while (gfn < end && !r) {
		struct pollfd pf = {.fd = ctl->fd, .events = POLLIN};
		if (*sent > first && poll(&pf, 1, 0) > 0)
			break;
		uint64_t run = gfn;
		while (run < end && run - gfn < PREFETCH_RUN && todo_test(s, run) &&
		       !page_is_zero(ram + run * 4096) && todo_claim(s, run))
			run++;
		if (run > gfn) {
			if (s->p->test_prefetch_delay_ms)
				usleep(s->p->test_prefetch_delay_ms * 1000);
			r = mig_send_pages(ctl, gfn, ram + gfn * 4096, (uint32_t)(run - gfn),
					   false);
			*sent += run - gfn;
			gfn = run;
			continue;
		}
		/* gfn stopped the run: a zero page (taken as zero), or one not
		 * in the push any more */
		if (todo_test(s, gfn) && page_is_zero(ram + gfn * 4096) && todo_claim(s, gfn)) {
			zero |= 1ULL << (gfn - start);
			++*sent;
		}
		gfn++;
	}
	if (zero && !r) {
		struct mig_zero zh = {.gfn = start, .count = (uint32_t)(end - start)};
		struct iovec iov[2] = {{&zh, sizeof(zh)}, {&zero, sizeof(zero)}};
		r = mig_send_iov(ctl, MIG_REC_ZERO, iov, 2);
	}
	return r;
}

/* Post-copy after the switch: push every page not sent yet on the data
 * channels (in the background, from the paused guest's RAM) and answer the
 * destination's page requests on the control connection, until it says
 * every page is in place. */
static int postcopy_answer(struct src *s, struct mig_conn *ctl, uint32_t round,
			   struct mig_report *rep, const uint64_t *push)
{
	uint8_t *ram = s->vm->mem.regions[0].hva;
	uint64_t answered = 0, prefetched = 0;
	struct mig_rec_hdr h;
	int r = 0;

	/* push: the pages the destination lacks (NULL: all of them) */
	memset(s->todo, 0xff, BITMAP_WORDS(s->nr_pages) * 8);
	if (push)
		memcpy(s->todo, push, BITMAP_WORDS(s->nr_pages) * 8);
	if (s->nr_pages % 64)
		s->todo[s->nr_pages / 64] &= (1ULL << (s->nr_pages % 64)) - 1;
	for (uint64_t g = 0; g < VM_UNTRACKED_BYTES / 4096 && g < s->nr_pages; g++)
		bitmap_clear(s->todo, g); /* went before the switch */
	round_begin(s, round, true);
	PROGRESS_SET(s->p, phase, MIG_PHASE_POSTCOPY);
	mig_conn_set_timeouts(ctl, s->p->timeout_ms, s->p->timeout_ms);
	for (;;) {
		r = mig_recv_hdr(ctl, &h);
		if (r)
			break;
		if (h.type == MIG_REC_PAGE_REQ) {
			struct mig_page_req q;
			r = mig_recv_payload(ctl, &h, &q, sizeof(q));
			if (!r && (!q.count || q.count > MIG_MAX_RUN_PAGES ||
				   q.gfn >= s->nr_pages || q.count > s->nr_pages - q.gfn)) {
				snprintf(ctl->why, sizeof(ctl->why), "request for pages %llu+%u",
					 (unsigned long long)q.gfn, q.count);
				r = -EPROTO;
			}
			__atomic_add_fetch(&s->pending, 1, __ATOMIC_RELAXED);
			if (!r)
				r = mig_send_pages(ctl, q.gfn, ram + q.gfn * 4096, q.count, false);
			/* Answered: the push need not send it again. */
			for (uint64_t g = q.gfn; !r && g < q.gfn + q.count; g++)
				(void)todo_claim(s, g);
			if (!r && s->prefetch)
				r = prefetch(s, ctl, q.gfn + q.count, &prefetched);
			__atomic_sub_fetch(&s->pending, 1, __ATOMIC_RELAXED);
			if (r)
				break;
			answered += q.count;
			continue;
		}
		if (h.type == MIG_REC_HEARTBEAT) {
			uint64_t x;
			r = mig_recv_payload(ctl, &h, &x, sizeof(x));
		} else if (h.type == MIG_REC_GUEST_STALL) {
			struct mig_guest_stall gs;
			r = mig_recv_payload(ctl, &h, &gs, sizeof(gs));
			if (!r && gs.known & 1)
				rep->guest_stall_ms = (double)gs.stall_us / 1e3;
		} else if (h.type == MIG_REC_POSTCOPY_DONE) {
			struct mig_postcopy_done dn;
			r = mig_recv_payload(ctl, &h, &dn, sizeof(dn));
			if (r)
				break;
			rep->postcopy_ms = (double)(now_ns() - s->t_switch) / 1e6;
			rep->faults = dn.faults;
			rep->pages_pulled = dn.pulled;
			rep->pages_twice = dn.twice;
			memcpy(rep->fault_lat_us, dn.lat_us, sizeof(dn.lat_us));
			log_debug("post-copy: %llu pages asked for and answered, %llu faults",
				  (unsigned long long)answered, (unsigned long long)dn.faults);
			s->t_done = now_ns();
			/* Then the guest's own view (optional, within a few
			 * seconds: the destination measures its speed
			 * with every page local first). */
			struct mig_guest_stall gs;
			mig_conn_set_timeouts(ctl, 8000, 8000);
			if (!mig_recv_expect(ctl, MIG_REC_GUEST_STALL, &gs, sizeof(gs))) {
				if (gs.known & 1)
					rep->guest_stall_ms = (double)gs.stall_us / 1e3;
				if (gs.known & 2)
					rep->tail_speed_pct = (double)gs.tail_speed / 10.0;
			}
			break;
		} else if (h.type == MIG_REC_ERROR) {
			r = mig_recv_error(ctl, &h, "destination");
		} else {
			snprintf(ctl->why, sizeof(ctl->why), "record type %u during post-copy",
				 h.type);
			r = -EPROTO;
		}
		if (r)
			break;
	}
	/* The push is over (the destination had every page); its senders
	 * finish their END and stop. One that fails now costs nothing: the
	 * destination has said it has every page. */
	pthread_mutex_lock(&s->lock);
	while (s->running && !r)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	for (unsigned i = 0; i < s->n && !r; i++)
		if (s->snd[i].err)
			log_debug("post-copy: data channel %u after the last page: %s", i + 1,
				  strerror(-s->snd[i].err));
	rep->pages_prefetched += prefetched;
	return r;
}

/* A fault waits on every answer: short time slices meanwhile. */
static int postcopy_serve(struct src *s, struct mig_conn *ctl, uint32_t round,
			  struct mig_report *rep, const uint64_t *push)
{
	thread_latency(true);
	int r = postcopy_answer(s, ctl, round, rep, push);
	thread_latency(false);
	return r;
}

static void close_all(struct src *s, struct mig_conn *ctl)
{
	for (unsigned i = 0; i < s->n; i++) {
		s->tx_before += s->snd[i].conn.tx_bytes;
		s->snd[i].conn.tx_bytes = 0;
		mig_conn_close(&s->snd[i].conn);
	}
	s->tx_before += ctl->tx_bytes;
	ctl->tx_bytes = 0;
	mig_conn_close(ctl);
}

/* RECOVER: the pages the destination has; *need gets the others. Or, where
 * ready is not NULL (GO was out, RESUMED had not come), READY: the
 * destination never had GO, and its guest has not run (*ready). */
static int recv_recover(struct src *s, struct mig_conn *ctl, uint64_t *need, bool *ready)
{
	struct mig_recover rc;
	struct mig_rec_hdr h;
	uint32_t crc = 0;
	size_t words = BITMAP_WORDS(s->nr_pages);
	int r = mig_recv_hdr(ctl, &h);

	if (r)
		return r;
	if (h.type == MIG_REC_ERROR)
		return mig_recv_error(ctl, &h, "destination");
	if (h.type == MIG_REC_READY && ready) {
		*ready = true;
		return mig_recv_payload(ctl, &h, NULL, 0);
	}
	if (h.type != MIG_REC_RECOVER || h.len != sizeof(rc) + words * 8) {
		snprintf(ctl->why, sizeof(ctl->why),
			 "record type %u of %u bytes instead of RECOVER", h.type, h.len);
		return -EPROTO;
	}
	r = mig_recv_part(ctl, &rc, sizeof(rc), &crc);
	if (!r && (rc.gfn || rc.count != s->nr_pages)) {
		snprintf(ctl->why, sizeof(ctl->why), "RECOVER for %u pages at %llu", rc.count,
			 (unsigned long long)rc.gfn);
		r = -EPROTO;
	}
	if (!r)
		r = mig_recv_part(ctl, need, words * 8, &crc);
	if (!r)
		r = mig_recv_crc_check(ctl, &h, crc);
	for (size_t w = 0; w < words && !r; w++)
		need[w] = ~need[w];
	return r;
}

/* Post-copy broke after the switch (cause): the guest waits at the
 * destination for the pages it lacks, and every page is still here. The
 * push stops; then new connections, at once, then every second and at
 * once when asked (migrate-recover), until the destination takes one and says which pages
 * it has (*need gets the others), or recover_ms pass, or a cancel. Broken
 * between GO and RESUMED (ready not NULL), the destination may also say it
 * never had GO (*ready). */
static int postcopy_recover(struct src *s, struct mig_conn *ctl, struct mig_report *rep, int cause,
			    uint64_t *need, bool *ready)
{
	const struct mig_params *p = s->p;
	const char *addr = p->addr;
	char why[200], asked_addr[300];
	int r;

	/* A sender's failure shuts the control connection down: then its
	 * reason is the one. */
	snprintf(why, sizeof(why), "%s", ctl->why[0] ? ctl->why : strerror(-cause));
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < s->n; i++)
		if (s->snd[i].err) {
			snprintf(why, sizeof(why), "data channel %u: %.150s", i + 1,
				 s->snd[i].conn.why[0] ? s->snd[i].conn.why
						       : strerror(-s->snd[i].err));
			break;
		}
	pthread_mutex_unlock(&s->lock);
	for (unsigned i = 0; i < s->n; i++)
		if (s->snd[i].conn.fd >= 0)
			shutdown(s->snd[i].conn.fd, SHUT_RDWR);
	pthread_mutex_lock(&s->lock);
	while (s->running)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	close_all(s, ctl);
	PROGRESS_SET(p, phase, MIG_PHASE_POSTCOPY_PAUSED);
	log_warn("%s: the connection broke (%s); %s; reconnecting for up to %d s (or on "
		 "migrate-recover)",
		 ready ? "the switch" : "post-copy", why,
		 ready ? "the destination runs the guest, or waits for GO"
		       : "the guest waits at the destination for the pages it lacks",
		 p->recover_ms / 1000);
	/* The first try at once: a short break costs the guest no more. */
	uint64_t t0 = now_ns(), next = t0;
	uint64_t deadline = t0 + (uint64_t)p->recover_ms * 1000000ULL;
	for (;;) {
		if (cancelled(s)) {
			snprintf(rep->error, sizeof(rep->error),
				 "%s recovery cancelled; it broke on: %.150s",
				 ready ? "the switch's" : "post-copy", why);
			return -ECANCELED;
		}
		bool asked =
		    p->recover_now && __atomic_exchange_n(p->recover_now, 0, __ATOMIC_ACQ_REL);
		uint64_t now = now_ns();
		if (asked) {
			if (p->recover_addr && p->recover_addr[0]) {
				snprintf(asked_addr, sizeof(asked_addr), "%s", p->recover_addr);
				addr = asked_addr;
			}
			deadline = MAX(deadline, now + (uint64_t)p->recover_ms * 1000000ULL);
		} else if (now >= deadline) {
			snprintf(rep->error, sizeof(rep->error),
				 "no recovery within %d s (if the destination had every page "
				 "already, the guest runs there); post-copy broke on: %.100s",
				 p->recover_ms / 1000, why);
			return -ETIMEDOUT;
		} else if (now < next) {
			usleep(50000);
			continue;
		}
		next = now + 1000000000ULL;
		rep->error[0] = 0;
		r = connect_all(s, ctl, addr, true, rep);
		if (!r)
			r = recv_recover(s, ctl, need, ready);
		if (!r)
			break;
		if (asked)
			log_warn("post-copy recovery through %s: %s", addr,
				 rep->error[0] ? rep->error
				 : ctl->why[0] ? ctl->why
					       : strerror(-r));
		else
			log_debug("post-copy recovery through %s: %s", addr,
				  rep->error[0] ? rep->error
				  : ctl->why[0] ? ctl->why
						: strerror(-r));
		close_all(s, ctl);
	}
	rep->error[0] = 0;
	mig_conn_set_timeouts(ctl, p->timeout_ms, p->timeout_ms);
	for (unsigned i = 0; i < s->n; i++) {
		struct sender *t = &s->snd[i];
		t->err = 0;
		t->pages0 = t->pages;
		t->zero_pages0 = t->zero_pages;
	}
	rep->recoveries++;
	rep->recover_wait_ms += (double)(now_ns() - t0) / 1e6;
	PROGRESS_SET(p, phase, ready && *ready ? MIG_PHASE_STOP_COPY : MIG_PHASE_POSTCOPY);
	if (ready && *ready)
		log_info("recovered after %.2f s through %s: the destination never had GO; it "
			 "goes again",
			 (double)(now_ns() - t0) / 1e9, addr);
	else
		log_info("post-copy recovered after %.2f s through %s: %llu pages still to go",
			 (double)(now_ns() - t0) / 1e9, addr,
			 (unsigned long long)bitmap_weight(need, s->nr_pages));
	return 0;
}

/* A post-copy break is recovered unless the destination gave up (its
 * ERROR), or we were cancelled, or recovery is off. */
static bool postcopy_recoverable(const struct mig_params *p, int r)
{
	return r != -ECONNABORTED && r != -ECANCELED && r != -ENOMEM && p->recover_ms > 0;
}

/* What went on the wire, for the report (the senders stopped). */
static void report_traffic(struct src *s, const struct mig_conn *ctl, struct mig_report *rep)
{
	rep->bytes = ctl->tx_bytes + s->tx_before;
	rep->pages_sent = rep->pages_resent = rep->zero_pages = 0;
	if (s->n && s->snd[0].conn.tx)
		snprintf(rep->send_mode, sizeof(rep->send_mode), "%s", s->snd[0].conn.tx->mode);
	for (unsigned i = 0; i < s->n; i++) {
		rep->bytes += s->snd[i].conn.tx_bytes;
		rep->pages_sent += s->snd[i].pages;
		rep->pages_resent += s->snd[i].resent;
		rep->zero_pages += s->snd[i].zero_pages;
	}
}

int mig_source_run(struct vm *vm, const struct mig_params *p, struct mig_report *rep)
{
	struct src s = {.vm = vm, .p = p, .nr_pages = mem_nr_pages(&vm->mem), .n = p->channels};
	const struct mig_policy_ops *pol = p->policy ? p->policy : mig_policy_for_mode(p->mode);
	struct mig_conn ctl = MIG_CONN_INIT;
	bool paused = false, tracking = false, switched = false;
	const bool postcopy = p->mode == MIG_MODE_POSTCOPY;
	const bool via_memsvc = p->mode == MIG_MODE_MEMSVC;
	bool complete_sent = false, quiesced = false;
	bool committed = false; /* GO sent: never resume this copy */
	/* the switch goes to post-copy: pure post-copy, or a hybrid's end */
	bool to_postcopy = postcopy;
	uint64_t *discard = NULL; /* hybrid: pages the destination holds stale */
	uint64_t *need = NULL;	  /* post-copy recovery: pages the destination lacks */
	uint64_t t_start = now_ns(), t_pause = 0, total_dirty = 0;
	double total_round_s = 0;
	uint32_t round = 0;
	int r;

	fill_report_static(rep, vm, p);
	snprintf(rep->policy, sizeof(rep->policy), "%s", pol->name);
	if (!(pol->modes & 1u << p->mode)) {
		snprintf(rep->error, sizeof(rep->error), "policy %s is not for mode %s", pol->name,
			 rep->mode);
		return -EINVAL;
	}
	s.pol = pol;
	s.prefetch = pol->prefetch ? MIN(pol->prefetch(p), MIG_MAX_RUN_PAGES - 1) : 0;
	if (!p->channels || p->channels > MIG_MAX_CHANNELS || !p->token_len ||
	    via_memsvc != !!p->remote) {
		snprintf(rep->error, sizeof(rep->error), "%s",
			 !p->token_len ? "no migration token"
			 : via_memsvc  ? "mode memsvc needs guest RAM in memsvc"
			 : p->remote   ? "guest RAM in memsvc migrates with mode memsvc"
				       : "bad channel count");
		return -EINVAL;
	}
	s.ctl = &ctl;
	pthread_mutex_init(&s.lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s.cond, &ca);
	pthread_condattr_destroy(&ca);
	for (unsigned i = 0; i < MIG_MAX_CHANNELS; i++)
		s.snd[i] = (struct sender){.s = &s, .k = i, .conn = MIG_CONN_INIT};
	s.todo = bitmap_alloc(s.nr_pages);
	s.sent = bitmap_alloc(s.nr_pages);
	s.more = via_memsvc ? bitmap_ready(s.nr_pages) : NULL;
	s.spare = bitmap_ready(s.nr_pages);
	if (pol->push_order) {
		uint64_t chunks = (s.nr_pages + CHUNK_PAGES - 1) / CHUNK_PAGES;
		s.chunk_round = calloc(chunks, sizeof(*s.chunk_round));
		s.chunk_written = calloc(chunks, sizeof(*s.chunk_written));
		if (!s.chunk_round || !s.chunk_written) {
			r = -ENOMEM;
			goto fail;
		}
	}
	if (!s.todo || !s.sent || (via_memsvc && !s.more) || !s.spare) {
		r = -ENOMEM;
		goto fail;
	}

	/* setup */
	PROGRESS_SET(p, phase, MIG_PHASE_SETUP);
	r = mig_random(s.session, sizeof(s.session));
	if (!r)
		r = connect_all(&s, &ctl, p->addr, false, rep);
	if (r)
		goto fail;
	for (unsigned i = 0; i < s.n; i++) {
		r = -pthread_create(&s.snd[i].thread, NULL, sender_thread, &s.snd[i]);
		if (r)
			goto fail;
		s.snd[i].started = true;
	}
	/* memsvc too: the pager's write protection says what was never
	 * stored, the dirty log what changed since a round stored it. */
	tracking = !postcopy;
	r = tracking ? vm_dirty_start(vm) : 0;
	if (r) {
		tracking = false;
		snprintf(rep->error, sizeof(rep->error), "starting dirty tracking: %s",
			 strerror(-r));
		goto fail;
	}
	/* The guest's longest stall is measured from here. */
	vm_memcheck_reset_stall(vm);
	rep->setup_ms = (double)(now_ns() - t_start) / 1e6;

	/* Post-copy switches at once: only the boot area goes before. The
	 * destination gets its RAM ready for it first (ADVISE, answered in
	 * kind), outside the downtime. */
	if (postcopy) {
		struct mig_postcopy adv = {0};
		r = mig_send_rec(&ctl, MIG_REC_ADVISE, &adv, sizeof(adv));
		if (!r)
			r = mig_recv_expect(&ctl, MIG_REC_ADVISE, &adv, sizeof(adv));
		if (r) {
			snprintf(rep->error, sizeof(rep->error), "post-copy advice: %s",
				 ctl.why[0] ? ctl.why : strerror(-r));
			goto fail;
		}
		rep->setup_ms = (double)(now_ns() - t_start) / 1e6;
		goto stop_copy;
	}
	if (via_memsvc && p->memsvc_cache == MIG_MEMSVC_WRITEBACK) {
		r = memsvc_rounds(&s, rep, t_start, &round);
		if (r)
			goto fail;
		goto stop_copy;
	}

	/* iterate: round 1 sends everything (memsvc: everything cached here;
	 * the rest is in memsvc as it is) */
	PROGRESS_SET(p, phase, MIG_PHASE_ITERATE);
	PROGRESS_SET(p, round, 1);
	if (via_memsvc) {
		r = memsvc_cached(&s);
		if (!r && !(s.stale = bitmap_alloc(s.nr_pages)))
			r = -ENOMEM;
		if (r)
			goto fail;
	} else {
		memset(s.todo, 0xff, BITMAP_WORDS(s.nr_pages) * 8);
		if (s.nr_pages % 64)
			s.todo[s.nr_pages / 64] = (1ULL << (s.nr_pages % 64)) - 1;
		/* The boot area goes from a copy (NULL: whole when paused). */
		s.boot_pages = MIN(VM_UNTRACKED_BYTES / 4096, s.nr_pages);
		if ((s.boot = malloc(s.boot_pages * 4096)) &&
		    getrandom(&s.boot_key, sizeof(s.boot_key), 0) == sizeof(s.boot_key)) {
			memcpy(s.boot, vm->mem.regions[0].hva, s.boot_pages * 4096);
			for (uint64_t g = 0; g < s.boot_pages; g++)
				s.boot_hash[g] = page_hash(s.boot + g * 4096, s.boot_key);
			s.boot_hashed = true;
		} else {
			free(s.boot);
			s.boot = NULL;
		}
	}
	struct mig_round_stats st = {0};
	for (;;) {
		uint64_t pages, bytes, t0 = now_ns();
		round++;
		r = run_round(&s, round, false, &pages, &bytes);
		if (r)
			goto fail;
		/* The boot area went, from the copy: its hashes stay. */
		free(s.boot);
		s.boot = NULL;
		/* A round ends when the destination has taken in all of it,
		 * not when the last byte is in a socket buffer: the bandwidth
		 * is then what really moved, the dirty set includes what the
		 * guest wrote meanwhile, and the downtime never pays for
		 * draining a backlog. */
		struct mig_round rr = {.round = round, .pages = pages};
		struct mig_mark done = {0};
		r = mig_send_rec(&ctl, MIG_REC_ROUND, &rr, sizeof(rr));
		while (!r && done.round < round)
			r = mig_recv_expect(&ctl, MIG_REC_ROUND_DONE, &done, sizeof(done));
		if (r) {
			snprintf(rep->error, sizeof(rep->error), "round %u: %s", round,
				 ctl.why[0] ? ctl.why : strerror(-r));
			goto fail;
		}
		if (cancelled(&s)) {
			r = -ECANCELED;
			goto fail;
		}
		memset(s.todo, 0, BITMAP_WORDS(s.nr_pages) * 8);
		r = vm_dirty_collect(vm, s.todo);
		if (r)
			goto fail;
		/* The paused round's bitmaps, written now to keep them warm:
		 * memory untouched for seconds costs a fault a page on this
		 * nested host once the destination has mapped gigabytes. */
		if (s.more)
			memset(s.more, 0, BITMAP_WORDS(s.nr_pages) * 8);
		memset(s.spare, 0, BITMAP_WORDS(s.nr_pages) * 8);
		note_writes(&s, s.todo, round);
		double secs = (double)(now_ns() - t0) / 1e9;
		uint64_t prev_dirty = round > 1 ? st.dirty_pages : 0;
		st = (struct mig_round_stats){
		    .round = round,
		    .prev_dirty_pages = prev_dirty,
		    .sent_pages = pages,
		    .sent_bytes = bytes,
		    .round_ms = secs * 1e3,
		    .bandwidth = secs > 0 ? (double)bytes / secs : 0,
		    .dirty_pages = bitmap_weight(s.todo, s.nr_pages),
		    .throttle_pct = s.throttle_pct,
		};
		st.dirty_rate = secs > 0 ? (double)st.dirty_pages / secs : 0;
		st.est_downtime_ms =
		    st.bandwidth > 0 ? (double)st.dirty_pages * 4096.0 / st.bandwidth * 1e3 : 1e9;
		total_dirty += st.dirty_pages;
		total_round_s += secs;
		if (rep->nr_timeline < MIG_TIMELINE_MAX)
			rep->timeline[rep->nr_timeline++] =
			    (struct mig_round_rec){.start_ms = (double)(t0 - t_start) / 1e6,
						   .end_ms = (double)(now_ns() - t_start) / 1e6,
						   .pages = pages,
						   .bytes = bytes,
						   .dirty_pages = st.dirty_pages,
						   .throttle_pct = st.throttle_pct};
		PROGRESS_SET(p, round, round + 1);
		PROGRESS_SET(p, dirty_pages, st.dirty_pages);
		PROGRESS_SET(p, dirty_rate_pps, (uint64_t)st.dirty_rate);
		PROGRESS_SET(p, est_downtime_us, (uint64_t)(st.est_downtime_ms * 1e3));
		PROGRESS_SET(p, bandwidth_bps, (uint64_t)st.bandwidth);
		PROGRESS_SET(p, throttle_pct, st.throttle_pct);
		{
			uint64_t sent = 0, nbytes = ctl.tx_bytes;
			for (unsigned i = 0; i < s.n; i++) {
				sent += s.snd[i].pages;
				nbytes += s.snd[i].conn.tx_bytes;
			}
			PROGRESS_SET(p, pages_sent, sent);
			PROGRESS_SET(p, bytes, nbytes);
		}
		log_debug("round %u: %llu pages in %.1f ms (%.0f MB/s), %llu dirty, est. downtime "
			  "%.2f ms, throttle %u%%",
			  round, (unsigned long long)pages, st.round_ms, st.bandwidth / 1e6,
			  (unsigned long long)st.dirty_pages, st.est_downtime_ms, st.throttle_pct);
		if (pol->should_stop(p, &st)) {
			to_postcopy = p->mode == MIG_MODE_HYBRID;
			break;
		}
		if (p->postcopy_now && __atomic_load_n(p->postcopy_now, __ATOMIC_RELAXED)) {
			log_info("switching to post-copy after round %u, as asked", round);
			to_postcopy = true;
			break;
		}
		uint32_t t = pol->throttle(p, &st);
		if (t != s.throttle_pct) {
			pthread_mutex_lock(&s.lock);
			s.throttle_pct = t;
			pthread_mutex_unlock(&s.lock);
			if (!s.throttle_started && t) {
				s.throttle_quit = false;
				if (!pthread_create(&s.throttle_thread, NULL, throttle_thread, &s))
					s.throttle_started = true;
			}
		}
	}

stop_copy:
	/* stop and copy */
	PROGRESS_SET(p, phase, MIG_PHASE_STOP_COPY);
	t_pause = now_ns();
	/* paused already if the throttle was in its paused part: then a
	 * failure below resumes the guest too */
	paused = throttle_stop(&s, true);
	r = vm_pause(vm);
	if (r)
		goto fail;
	paused = true;
	log_debug("vCPUs paused in %.2f ms", (double)(now_ns() - t_pause) / 1e6);
	for (uint32_t i = 0; i < vm->nr_vcpus; i++) {
		if (vcpu_get_run_state(vm->vcpus[i]) == VCPU_FAILED) {
			snprintf(rep->error, sizeof(rep->error),
				 "vCPU %u of the guest failed during the migration: %.150s", i,
				 vm->vcpus[i]->fail_reason);
			r = -EIO;
			goto fail;
		}
	}
	/* ORed into what the last round left */
	r = tracking ? vm_dirty_collect(vm, s.todo) : 0;
	if (!r && via_memsvc) {
		uint64_t *more = s.more;
		/* What was written since it last went (to memsvc, or to the
		 * destination: the last round's log and this one) goes
		 * straight to the destination, which keeps it resident and
		 * dirty, newer than memsvc's copy. Only pages dirty here: one
		 * evicted or fetched again since is in memsvc as it is, and a
		 * copy the destination got in a round is stale then: it drops
		 * it. A dirty page that never went (held by the evictor when
		 * round 1 was chosen) goes too. */
		remote_quiesce(p->remote, true); /* the dirty set holds still */
		quiesced = true;
		memset(more, 0, BITMAP_WORDS(s.nr_pages) * 8);
		remote_dirty_bitmap(p->remote, more);
		bool sent_cache = p->memsvc_cache == MIG_MEMSVC_SEND;
		if (sent_cache) {
			discard = s.spare;
			s.spare = NULL;
		}
		for (uint64_t w = 0; !r && w < BITMAP_WORDS(s.nr_pages); w++) {
			if (sent_cache) {
				s.todo[w] |= more[w] & ~s.sent[w];
				discard[w] = (s.todo[w] | s.stale[w]) & ~more[w];
			}
			s.todo[w] &= more[w];
		}
		rep->written_paused = bitmap_weight(s.todo, s.nr_pages);
		/* the boot area goes whole below, and is never paged */
		for (uint64_t g = 0; discard && g < VM_UNTRACKED_BYTES / 4096 && g < s.nr_pages;
		     g++)
			bitmap_clear(discard, g);
		rep->discarded = discard ? bitmap_weight(discard, s.nr_pages) : 0;
	}
	/* A switch to post-copy after rounds: what was dirtied since it was
	 * sent is not sent now; the destination drops its stale copy, and it
	 * comes after the switch (pushed, or pulled by a fault). */
	if (!r && to_postcopy && !postcopy) {
		note_writes(&s, s.todo, round + 1);
		if (!discard) {
			discard = s.spare;
			s.spare = NULL;
		}
		memcpy(discard, s.todo, BITMAP_WORDS(s.nr_pages) * 8);
		memset(s.todo, 0, BITMAP_WORDS(s.nr_pages) * 8);
	}
	/* The untracked boot area goes again: its changes are not logged. The
	 * pages that differ from the copy round 1 sent (by their hashes), or
	 * all of them. */
	uint64_t boot_sent = 0;
	for (uint64_t g = 0; g < VM_UNTRACKED_BYTES / 4096 && g < s.nr_pages; g++)
		if (!s.boot_hashed ||
		    page_hash(vm->mem.regions[0].hva + g * 4096, s.boot_key) != s.boot_hash[g]) {
			bitmap_set(s.todo, g);
			boot_sent++;
		}
	if (r)
		goto fail;
	round++;
	uint64_t pages, bytes, t_paused = now_ns();
	r = run_round(&s, round, !to_postcopy, &pages, &bytes);
	uint64_t t_sent = now_ns();
	if (!r)
		r = send_state(&s, &ctl, round, to_postcopy, discard);
	if (r)
		goto fail;
	complete_sent = true;
	uint64_t t_state = now_ns();
	struct mig_resumed res;
	/* READY: restored and checked there, not running. Until now any
	 * failure resumes the guest here. */
	r = mig_recv_expect(&ctl, MIG_REC_READY, NULL, 0);
	if (r) {
		snprintf(rep->error, sizeof(rep->error), "waiting for the destination: %s",
			 ctl.why[0] ? ctl.why : strerror(-r));
		goto fail;
	}
	/* GO: the guest is the destination's from here (once the record is
	 * out); this copy never runs again, whatever happens. */
	r = mig_send_rec(&ctl, MIG_REC_GO, NULL, 0);
	if (r) {
		snprintf(rep->error, sizeof(rep->error), "telling the destination to run: %s",
			 strerror(-r));
		goto fail;
	}
	committed = true;
	r = mig_recv_expect(&ctl, MIG_REC_RESUMED, &res, sizeof(res));
	/* Broken here, the destination either runs the guest (GO came; in
	 * post-copy it waits for pages and for a reconnect), or it waits for
	 * GO and a reconnect: it says which (RECOVER, or READY again). A
	 * pre-copy destination that had GO needs nothing more: no answer,
	 * and in the end this copy's status is unconfirmed. */
	bool switch_recovered = false;
	while (r && postcopy_recoverable(p, r)) {
		bool ready = false;
		if (!need && !(need = bitmap_alloc(s.nr_pages))) {
			r = -ENOMEM;
			break;
		}
		r = postcopy_recover(&s, &ctl, rep, r, need, &ready);
		if (r)
			break;
		if (!ready && !to_postcopy) {
			snprintf(ctl.why, sizeof(ctl.why), "RECOVER in a pre-copy migration");
			r = -EPROTO;
			break;
		}
		if (!ready) {
			switch_recovered = true;
			memset(&res, 0, sizeof(res));
			break;
		}
		r = mig_send_rec(&ctl, MIG_REC_GO, NULL, 0);
		if (!r)
			r = mig_recv_expect(&ctl, MIG_REC_RESUMED, &res, sizeof(res));
	}
	if (r) {
		snprintf(rep->error, sizeof(rep->error),
			 "the destination was told to run the guest and did not confirm it: %.150s",
			 ctl.why[0] ? ctl.why : strerror(-r));
		goto fail;
	}
	uint64_t t_end = now_ns();
	rep->paused_at_ms = (double)(t_pause - t_start) / 1e6;
	rep->resumed_at_ms = (double)(t_end - t_start) / 1e6;
	if (rep->nr_timeline < MIG_TIMELINE_MAX)
		rep->timeline[rep->nr_timeline++] =
		    (struct mig_round_rec){.start_ms = (double)(t_paused - t_start) / 1e6,
					   .end_ms = (double)(t_sent - t_start) / 1e6,
					   .pages = pages,
					   .bytes = bytes,
					   .stopped = true};
	log_debug("downtime %.2f ms: pause and collect %.2f, last %llu pages (%llu of the boot "
		  "area) %.2f, state %.2f, restore and RESUMED %.2f (restore %.2f)",
		  (double)(t_end - t_pause) / 1e6, (double)(t_paused - t_pause) / 1e6,
		  (unsigned long long)pages, (unsigned long long)boot_sent,
		  (double)(t_sent - t_paused) / 1e6, (double)(t_state - t_sent) / 1e6,
		  (double)(t_end - t_state) / 1e6, (double)res.restore_ns / 1e6);
	if (to_postcopy) {
		/* From here the guest runs at the destination: whatever
		 * happens, this copy must never run again. */
		switched = true;
		snprintf(rep->mode, sizeof(rep->mode), "%s", discard ? "hybrid" : "postcopy");
		pthread_mutex_lock(&s.lock);
		s.postcopy = true;
		pthread_mutex_unlock(&s.lock);
		s.t_switch = t_end;
		r = push_order(&s);
		if (!r)
			r = postcopy_serve(&s, &ctl, round + 1, rep,
					   switch_recovered ? need : discard);
		while (r && postcopy_recoverable(p, r)) {
			if (!need && !(need = bitmap_alloc(s.nr_pages))) {
				r = -ENOMEM;
				break;
			}
			/* No recovery in time, or a cancel: the guest is lost. */
			r = postcopy_recover(&s, &ctl, rep, r, need, NULL);
			if (r)
				break;
			r = postcopy_serve(&s, &ctl, round + 1, rep, need);
		}
		if (r)
			goto fail;
	} else {
		/* The guest's own view of the stop, if the destination can tell. */
		struct mig_guest_stall gs = {0};
		mig_conn_set_timeouts(&ctl, 3000, 3000);
		if (!mig_recv_expect(&ctl, MIG_REC_GUEST_STALL, &gs, sizeof(gs)) && gs.known & 1)
			rep->guest_stall_ms = (double)gs.stall_us / 1e3;
	}

	/* switched over: the guest runs on the destination */
	senders_stop(&s);
	if (tracking)
		vm_dirty_stop(vm);
	snprintf(rep->status, sizeof(rep->status), "completed");
	PROGRESS_SET(p, phase, MIG_PHASE_DONE);
	/* post-copy and hybrid: until every page is in at the destination */
	rep->total_ms = (double)((to_postcopy ? s.t_done : t_end) - t_start) / 1e6;
	rep->downtime_ms = (double)(t_end - t_pause) / 1e6;
	rep->restore_ms = (double)res.restore_ns / 1e6;
	rep->rounds = round;
	report_traffic(&s, &ctl, rep);
	for (unsigned i = 0; i < s.n; i++)
		mig_conn_close(&s.snd[i].conn);
	rep->throughput_mbps = rep->total_ms > 0 ? (double)rep->bytes * 8 / 1e3 / rep->total_ms : 0;
	rep->dirty_rate_pps = total_round_s > 0 ? (double)total_dirty / total_round_s : 0;
	rep->throttle_pct = s.throttle_pct;
	rep->hot_pages = s.hot;
	mig_conn_close(&ctl);
	free(discard);
	free(need);
	src_free(&s);
	return 0;

fail:
	/* Hand the guest back: it keeps running here. */
	if (!rep->error[0]) {
		const char *why = ctl.why[0] ? ctl.why : "";
		for (unsigned i = 0; i < s.n && !why[0]; i++)
			why = s.snd[i].conn.why;
		snprintf(rep->error, sizeof(rep->error), "%s%s%s", strerror(-r), why[0] ? ": " : "",
			 why);
	}
	if (r == -ECANCELED && !switched)
		snprintf(rep->status, sizeof(rep->status), "cancelled");
	if (switched) {
		/* Post-copy broke after the switch: the destination's guest
		 * lacks pages and this copy is stale. Neither may run. */
		snprintf(rep->status, sizeof(rep->status), "lost");
		char why[sizeof(rep->error)];
		snprintf(why, sizeof(why), "%s", rep->error);
		snprintf(rep->error, sizeof(rep->error),
			 "post-copy failed after the switch, the guest is lost: %.180s", why);
		paused = false; /* never resume it */
	}
	if (committed && !switched) {
		/* The destination has GO: it runs the guest, or it failed;
		 * this copy must not run either way. */
		snprintf(rep->status, sizeof(rep->status), "unconfirmed");
		paused = false;
	}
	mig_send_error(&ctl, r, "source: %s", rep->error);
	for (unsigned i = 0; i < s.n; i++)
		if (s.snd[i].conn.fd >= 0)
			shutdown(s.snd[i].conn.fd, SHUT_RDWR);
	throttle_stop(&s, false);
	senders_stop(&s);
	report_traffic(&s, &ctl, rep);
	/* memsvc: once COMPLETE is out, the destination may have taken the
	 * namespace, which fences this copy off it. Without GO its guest
	 * never ran, so nothing there is newer than here (what it wrote back
	 * came from here): take the namespace back, fencing it in turn, and
	 * run on. Only if that fails is the guest lost. */
	if (via_memsvc && complete_sent && paused && remote_owned(p->remote) == -ESTALE) {
		int rr = remote_retake(p->remote);
		char why[sizeof(rep->error)];
		snprintf(why, sizeof(why), "%s", rep->error);
		if (rr) {
			snprintf(rep->status, sizeof(rep->status), "lost");
			snprintf(rep->error, sizeof(rep->error),
				 "the destination took the memsvc namespace, then failed, and "
				 "taking it back failed (%s): %.140s",
				 strerror(-rr), why);
			paused = false;
		} else {
			rep->retaken = true;
			snprintf(
			    rep->error, sizeof(rep->error),
			    "the destination took the memsvc namespace, then failed before its "
			    "guest ran; taken back, the guest runs on here: %.120s",
			    why);
		}
	}
	for (unsigned i = 0; i < s.n; i++)
		mig_conn_close(&s.snd[i].conn);
	mig_conn_close(&ctl);
	if (tracking)
		vm_dirty_stop(vm);
	if (quiesced && paused)
		remote_quiesce(p->remote, false);
	if (paused)
		vm_resume(vm);
	rep->rounds = round;
	rep->total_ms = (double)(now_ns() - t_start) / 1e6;
	PROGRESS_SET(p, phase, MIG_PHASE_DONE);
	free(discard);
	free(need);
	src_free(&s);
	return r;
}
