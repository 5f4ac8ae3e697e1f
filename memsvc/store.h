/* SPDX-License-Identifier: MIT */
/*
 * The page store of flit-memsvc: namespaces of 4 KiB pages, each an mmap
 * region (anonymous, or a sparse file DIR/NAME.pages mapped shared), a
 * "present" bitmap (in memory, or the file DIR/NAME.present mapped shared)
 * and its metadata (DIR/NAME.meta: name, SHA-256 of the token, size, limit,
 * owner epoch; replaced atomically).
 *
 * Single-threaded: the service's loop thread is the only caller.
 */
#ifndef FLIT_MEMSVC_STORE_H
#define FLIT_MEMSVC_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "memsvc/proto.h"

struct ms_ns {
	char name[MEMSVC_NAME_MAX + 1];
	uint8_t token_hash[32];
	uint64_t nr_pages;
	uint64_t limit_pages;
	uint64_t used_pages; /* bits set in present */
	uint64_t epoch;	     /* the current owner's; 0 before the first open */
	uint8_t *pages;	     /* nr_pages * MEMSVC_PAGE, mapped */
	uint64_t *present;   /* one bit per page: written */
	size_t present_bytes;
	int data_fd, present_fd; /* -1 in memory mode */
	/* Deleted: its pages and files are gone; the entry stays (unnamed
	 * to ms_ns_find) because connections may still point at it. */
	bool deleted;
	struct ms_ns *next;
};

struct ms_store {
	char *dir; /* NULL: memory only */
	int dir_fd, lock_fd;
	bool sync;	    /* fdatasync before every write is acknowledged */
	uint64_t max_pages; /* cap on the sum of the limits, 0 = none */
	uint64_t sum_limits;
	unsigned nr_ns;
	struct ms_ns *ns;
};

/* Opens a store: dir NULL for memory only; otherwise the folder is created
 * if missing, locked against a second service, and every NAME.meta in it
 * is loaded with its pages. 0 or -errno with the reason (naming the file)
 * in why. */
int ms_store_open(const char *dir, bool sync, uint64_t max_mem, struct ms_store **out, char *why,
		  size_t whylen);
/* Unmaps and closes everything (tolerates a half-built store). */
void ms_store_close(struct ms_store *st);

/* Creates a namespace (persisted before it returns with a folder).
 * limit_pages 0 means nr_pages. 0, -EEXIST, -EINVAL, -ENOSPC, -EIO,
 * -ENOMEM, with why. */
int ms_ns_create(struct ms_store *st, const char *name, const void *token, size_t token_len,
		 uint64_t nr_pages, uint64_t limit_pages, char *why, size_t whylen);

/* The namespace of that name, deleted ones not counted; NULL if none. */
struct ms_ns *ms_ns_find(struct ms_store *st, const char *name, size_t len);

/* Deletes ns: with a folder, its NAME.meta goes first (from then on a
 * restart does not load it), then its page files; its memory is unmapped
 * and its limit returned to the service's cap. The caller has fenced every
 * access (RDMA registrations included). 0, or -EIO with why (NAME.meta
 * could not be removed: nothing changed). */
int ms_ns_delete(struct ms_store *st, struct ms_ns *ns, char *why, size_t whylen);

/* Compares the token's SHA-256 with the stored one in constant time. */
bool ms_ns_token_ok(const struct ms_ns *ns, const void *token, size_t token_len);

/* Sets the owner epoch and persists it (before it returns). 0 or -EIO. */
int ms_ns_set_epoch(struct ms_store *st, struct ms_ns *ns, uint64_t epoch, char *why,
		    size_t whylen);

static inline bool ms_ns_present(const struct ms_ns *ns, uint64_t gfn)
{
	return (ns->present[gfn / 64] >> (gfn % 64)) & 1;
}

/* Stores n pages (gfn already checked in range); page i from src +
 * i * MEMSVC_PAGE. Either every page is stored or (limit) none: -ENOSPC
 * with why. With sync, the data and the bitmap are on disk when it returns
 * 0; -EIO if that failed. */
int ms_ns_write(struct ms_store *st, struct ms_ns *ns, const uint64_t *gfn, uint32_t n,
		const uint8_t *src, char *why, size_t whylen);

/* Marks n pages (gfn already checked in range) as stored whose data was
 * placed in ns->pages by the NIC (RDMA_COMMIT). Limit, order of bits and
 * --sync as ms_ns_write. */
int ms_ns_commit(struct ms_store *st, struct ms_ns *ns, const uint64_t *gfn, uint32_t n, char *why,
		 size_t whylen);

#endif
