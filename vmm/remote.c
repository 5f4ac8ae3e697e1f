// SPDX-License-Identifier: MIT
#include "remote.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/bitmap.h"
#include "common/log.h"
#include "common/util.h"
#include "memsvc/client.h"
#include "vm.h"

#define FIRST_GFN (VM_UNTRACKED_BYTES / 4096)

/* One connection of the pager's: its page numbers are relative to the
 * first MiB. */
struct store {
	struct memsvc_client *c;
};

struct remote_mem {
	struct store fetch, evict;
	struct pager *pager;
	uint64_t *keep; /* destination: the pages kept at the start */
	uint64_t epoch;
	char url[400];
};

/* The pager's pages are the namespace's from FIRST_GFN on. */
#define STORE_MANY (MEMSVC_MAX_BATCH * MEMSVC_PIPELINE)

static int store_read(void *s, const uint64_t *gfn, unsigned n, void *out, bool *zero)
{
	uint64_t abs[STORE_MANY];

	for (unsigned i = 0; i < n; i++)
		abs[i] = gfn[i] + FIRST_GFN;
	struct memsvc_client *c = ((struct store *)s)->c;
	/* A fault's few pages in one request; a prefetch's many pipelined. */
	return n <= MEMSVC_MAX_BATCH ? memsvc_read(c, abs, n, out, zero)
				     : memsvc_read_many(c, abs, n, out, zero);
}

static int store_write(void *s, const uint64_t *gfn, unsigned n, const void *const *src)
{
	uint64_t abs[STORE_MANY];

	for (unsigned i = 0; i < n; i++)
		abs[i] = gfn[i] + FIRST_GFN;
	return memsvc_write_many(((struct store *)s)->c, abs, n, src);
}

static int store_reconnect(void *s)
{
	return memsvc_reconnect(((struct store *)s)->c);
}

static const char *store_why(void *s)
{
	return memsvc_why(((struct store *)s)->c);
}

static const struct page_store_ops memsvc_store = {
    .read = store_read,
    .write = store_write,
    .reconnect = store_reconnect,
    .why = store_why,
    .max_batch = MEMSVC_MAX_BATCH,
    .max_many = STORE_MANY,
};

/* Drops RAM above the first MiB but the pages p keeps; the kept ones are
 * noted in kept (page numbers of the paged range). */
/* Drops RAM above the first MiB but the pages p keeps; the kept ones are
 * noted in kept (page numbers of the paged range). Word by word: most of
 * RAM is one long run to drop. */
static int drop_all_but(struct vm *vm, uint64_t *kept, const struct remote_params *p,
			uint64_t paged)
{
	uint8_t *base = vm->mem.regions[0].hva + VM_UNTRACKED_BYTES;
	const uint64_t off = FIRST_GFN / 64; /* the first MiB is whole words */
	uint64_t words = BITMAP_WORDS(paged), from = 0;

	for (uint64_t w = 0; w <= words; w++) {
		uint64_t k = 0, z = 0;
		if (w < words) {
			k = p->keep ? p->keep[w + off] : 0;
			z = p->zeroed ? p->zeroed[w + off] : 0;
			if (w == words - 1 && paged % 64) {
				k &= (1ULL << (paged % 64)) - 1;
				z &= (1ULL << (paged % 64)) - 1;
			}
		}
		if (w < words && !(k | z))
			continue;
		/* Drop [from, first kept page of this word). */
		uint64_t end = w < words ? w * 64 + (uint64_t)__builtin_ctzll(k | z) : paged;
		if (end > from && madvise(base + from * 4096, (end - from) * 4096, MADV_DONTNEED)) {
			log_err("remote memory: dropping RAM: %s", strerror(errno));
			return -errno;
		}
		if (w == words)
			break;
		kept[w] = k | z;
		/* A page that arrived as zero was never written here: make it
		 * a resident page of zeros, or it would fault in memsvc's
		 * older copy. Then drop what this word does not keep. */
		for (unsigned i = 0; i < 64; i++) {
			uint64_t g = w * 64 + i, bit = 1ULL << i;
			if ((z & bit) && !(k & bit))
				memset(base + g * 4096, 0, 4096);
			else if (!((k | z) & bit) && g > end &&
				 madvise(base + g * 4096, 4096, MADV_DONTNEED))
				return -errno;
		}
		from = w * 64 + 64;
	}
	return 0;
}

int remote_open(struct remote_mem **out, struct vm *vm, const struct remote_params *p)
{
	char host[256], ns[128], why[200], token[600];
	uint16_t port;
	uint64_t nr_pages = mem_nr_pages(&vm->mem);
	struct remote_mem *rm;
	int r;
	uint64_t t0 = now_ns();

	*out = NULL;
	if (memsvc_parse_url(p->url, host, sizeof(host), &port, ns, sizeof(ns), why, sizeof(why))) {
		log_err("%s: %s", p->url, why);
		return -EINVAL;
	}
	if (vm->mem.nr_regions != 1 || vm->mem.regions[0].backing != MEM_ANON) {
		log_err("remote memory needs one anonymous RAM region");
		return -EINVAL;
	}
	rm = calloc(1, sizeof(*rm));
	if (!rm)
		return -ENOMEM;
	memsvc_token_text(p->token, p->token_len, token);
	snprintf(rm->url, sizeof(rm->url), "memsvc://%s:%u/%s", host, port, ns);
	uint64_t paged = nr_pages - FIRST_GFN;
	if (p->drop_resident) {
		rm->keep = bitmap_alloc(paged);
		if (!rm->keep) {
			r = -ENOMEM;
			goto fail;
		}
		r = drop_all_but(vm, rm->keep, p, paged);
		if (r)
			goto fail;
	}
	uint64_t t_drop = now_ns();

	/* Create the namespace if need be and build the pager (evictor held
	 * back) before taking ownership: a failure until then leaves the
	 * namespace's owner, a migration's source, undisturbed and free to
	 * run on. Ownership comes last: the evictor's connection takes a new
	 * epoch, the fault thread's joins it. */
	rm->evict.c = memsvc_connect(host, port, 0, &r, why, sizeof(why));
	if (rm->evict.c)
		rm->fetch.c = memsvc_connect(host, port, 0, &r, why, sizeof(why));
	if (!rm->evict.c || !rm->fetch.c) {
		log_err("memsvc %s:%u: %s", host, port, why);
		goto fail;
	}
	r = memsvc_create(rm->evict.c, ns, token, nr_pages, 0);
	if (r && r != -EEXIST) {
		log_err("memsvc: creating namespace %s: %s", ns, memsvc_why(rm->evict.c));
		goto fail;
	}
	struct pager_params pp = {.cache_pages = p->cache_bytes / 4096,
				  .retry_ms = p->retry_ms,
				  .resident = rm->keep,
				  .quiet = true};
	if (!pp.cache_pages)
		pp.cache_pages = MAX(paged / 4, 1);
	uint64_t t_conn = now_ns();
	r = pager_open(&rm->pager, vm->mem.regions[0].hva + VM_UNTRACKED_BYTES, paged, &pp,
		       &memsvc_store, &rm->fetch, &rm->evict, why, sizeof(why));
	if (r) {
		log_err("remote memory: %s", why);
		goto fail;
	}
	uint64_t t_pager = now_ns();
	struct memsvc_ns_info info;
	uint64_t epoch = 0;
	r = memsvc_open(rm->evict.c, ns, token, &epoch, &info);
	if (!r && info.nr_pages != nr_pages) {
		char a[32], b[32];
		log_err("memsvc namespace %s holds %s, the guest has %s of RAM", ns,
			fmt_size(info.nr_pages * 4096, a, sizeof(a)),
			fmt_size(nr_pages * 4096, b, sizeof(b)));
		r = -EINVAL;
		goto fail;
	}
	rm->epoch = epoch;
	struct memsvc_client *failed = r ? rm->evict.c : rm->fetch.c;
	if (!r)
		r = memsvc_open(rm->fetch.c, ns, token, &epoch, NULL);
	if (r) {
		log_err("memsvc namespace %s: %s", ns, memsvc_why(failed));
		goto fail;
	}
	pager_quiesce(rm->pager, false);
	log_debug("memsvc: attach: drop %.2f ms, connect %.2f ms, pager %.2f ms, open %.2f ms",
		  (double)(t_drop - t0) / 1e6, (double)(t_conn - t_drop) / 1e6,
		  (double)(t_pager - t_conn) / 1e6, (double)(now_ns() - t_pager) / 1e6);
	char a[32];
	log_info("guest RAM in memsvc %s:%u/%s (epoch %llu, %s of it resident at most, %llu "
		 "pages stored)",
		 host, port, ns, (unsigned long long)rm->epoch,
		 fmt_size(pp.cache_pages * 4096, a, sizeof(a)),
		 (unsigned long long)info.used_pages);
	*out = rm;
	return 0;
fail:
	remote_close(rm);
	return r;
}

int remote_flush(struct remote_mem *rm, const uint64_t *only, uint64_t *written)
{
	return pager_flush(rm->pager, only, FIRST_GFN, written);
}

void remote_stats(struct remote_mem *rm, struct pager_stats *s)
{
	pager_stats(rm->pager, s);
}

int remote_failed(struct remote_mem *rm, char *why, unsigned whylen)
{
	return pager_failed(rm->pager, why, whylen);
}

uint64_t remote_epoch(const struct remote_mem *rm)
{
	return rm->epoch;
}

const char *remote_url(const struct remote_mem *rm)
{
	return rm->url;
}

uint64_t remote_dirty(struct remote_mem *rm)
{
	return pager_dirty(rm->pager);
}

void remote_quiesce(struct remote_mem *rm, bool on)
{
	pager_quiesce(rm->pager, on);
}

uint64_t remote_dirty_bitmap(struct remote_mem *rm, uint64_t *bitmap)
{
	return pager_dirty_bitmap(rm->pager, bitmap, FIRST_GFN);
}

bool remote_page_resident(struct remote_mem *rm, uint64_t gfn)
{
	return gfn < FIRST_GFN || pager_page_resident(rm->pager, gfn - FIRST_GFN);
}

uint64_t remote_hot(struct remote_mem *rm, uint64_t *gfn, uint64_t max)
{
	uint64_t n = pager_resident(rm->pager, gfn, max);
	for (uint64_t i = 0; i < n; i++)
		gfn[i] += FIRST_GFN;
	return n;
}

int remote_prefetch(struct remote_mem *rm, const uint64_t *gfn, uint64_t n)
{
	uint64_t rel[256];
	int r = 0;

	for (uint64_t i = 0; i < n && !r;) {
		unsigned k = 0;
		for (; i < n && k < 256; i++)
			if (gfn[i] >= FIRST_GFN)
				rel[k++] = gfn[i] - FIRST_GFN;
		r = pager_prefetch(rm->pager, rel, k);
	}
	return r;
}

int remote_owned(struct remote_mem *rm)
{
	struct memsvc_ns_info info;
	return memsvc_info(rm->evict.c, &info);
}

int remote_retake(struct remote_mem *rm)
{
	uint64_t epoch = 0;
	struct memsvc_client *c = rm->evict.c;
	int r = memsvc_retake(c, &epoch);

	if (!r) {
		c = rm->fetch.c;
		r = memsvc_retake(c, &epoch);
	}
	if (r) {
		log_err("%s: taking the namespace back: %s", rm->url, memsvc_why(c));
		return r;
	}
	log_info("%s: namespace taken back (epoch %llu)", rm->url, (unsigned long long)epoch);
	rm->epoch = epoch;
	return 0;
}

void remote_close(struct remote_mem *rm)
{
	if (!rm)
		return;
	pager_close(rm->pager);
	if (rm->fetch.c)
		memsvc_close(rm->fetch.c);
	if (rm->evict.c)
		memsvc_close(rm->evict.c);
	free(rm->keep);
	free(rm);
}
