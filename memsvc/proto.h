/* SPDX-License-Identifier: MIT */
/*
 * The memsvc wire protocol, version 1 (docs/memsvc.md has the full story).
 *
 * Message sequence, one TCP connection:
 *
 *   client                                 service
 *   HELLO {min, max version}     --->
 *                                <---      HELLO_OK {version, max batch}
 *   CREATE / OPEN / INFO /
 *   READ / WRITE                 --->
 *                                <---      *_OK, or ERROR {code, message}
 *   ...
 *
 * Looking after namespaces (HELLO_OK features has MEMSVC_FEAT_ADMIN):
 *
 *   DELETE {name, token}         --->
 *                                <---      DELETE_OK, or ERROR (BUSY: a live
 *                                          owner on another connection)
 *   LIST {after, token}          --->
 *                                <---      LIST_OK {count, more} + entries:
 *                                          the token's namespaces named
 *                                          after "after", in name order
 *
 * With an RDMA listener (HELLO_OK features has MEMSVC_FEAT_RDMA), the owner
 * of an open namespace may move pages one-sided:
 *
 *   RDMA_INFO                    --->
 *                                <---      RDMA_INFO_OK {epoch, addr, len,
 *                                                        rkey, cookie, cm}
 *   (rdma_cm connect to cm with {cookie, epoch} as private data;
 *    RDMA WRITE of pages, then an RDMA READ on the same QP)
 *   RDMA_COMMIT {n, gfn[n]}      --->
 *                                <---      RDMA_COMMIT_OK (pages stored)
 *
 * The rkey and the cookie are good for that epoch only: the next OPEN with
 * epoch 0 deregisters them (docs/memsvc.md, "RDMA").
 *
 * Every record is a 24-byte little-endian header and a payload of hdr.len
 * bytes. The CRC-32C covers the header (crc field as zero) and the payload.
 * Answers carry the request's id. The service handles a connection's
 * records in order, one at a time: a client may pipeline, answers come back
 * in request order.
 *
 * A framing error (bad magic, version, reserved bits, CRC, a length over
 * MEMSVC_MAX_PAYLOAD, an unknown type, a payload that does not match its
 * type) is answered with ERROR and MEMSVC_F_CLOSE, then the connection is
 * closed. A well-framed request the service refuses (no such namespace,
 * wrong token, ...) is answered with ERROR and the connection stays usable.
 */
#ifndef FLIT_MEMSVC_PROTO_H
#define FLIT_MEMSVC_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/crc32c.h"
#include "memsvc/client.h"

#define MEMSVC_MAGIC	0x534d4c46u /* "FLMS" in the byte stream */
#define MEMSVC_VERSION	1u
#define MEMSVC_HDR_SIZE 24u

/* Record types. An answer's type is its request's with bit 7 set. */
enum memsvc_type {
	MEMSVC_HELLO = 0x01,
	MEMSVC_CREATE = 0x02,
	MEMSVC_OPEN = 0x03,
	MEMSVC_INFO = 0x04,
	MEMSVC_READ = 0x05,
	MEMSVC_WRITE = 0x06,
	MEMSVC_RDMA_INFO = 0x07,
	MEMSVC_RDMA_COMMIT = 0x08,
	MEMSVC_DELETE = 0x09,
	MEMSVC_LIST = 0x0a,
	MEMSVC_ANSWER = 0x80,
	MEMSVC_HELLO_OK = 0x81,
	MEMSVC_CREATE_OK = 0x82,
	MEMSVC_OPEN_OK = 0x83,
	MEMSVC_INFO_OK = 0x84,
	MEMSVC_READ_OK = 0x85,
	MEMSVC_WRITE_OK = 0x86,
	MEMSVC_RDMA_INFO_OK = 0x87,
	MEMSVC_RDMA_COMMIT_OK = 0x88,
	MEMSVC_DELETE_OK = 0x89,
	MEMSVC_LIST_OK = 0x8a,
	MEMSVC_ERROR = 0xff,
};

/* Header flags. */
#define MEMSVC_F_CLOSE 0x0001u /* ERROR only: the service closes the connection after it */

/* Per-page flags of READ_OK. */
#define MEMSVC_PAGE_ZERO 0x01u /* never written: no data follows for it */

/* Error codes on the wire (stable, not the host's errno numbers). */
enum memsvc_code {
	MEMSVC_E_NOENT = 1,   /* no such namespace */
	MEMSVC_E_EXIST = 2,   /* namespace exists */
	MEMSVC_E_ACCES = 3,   /* wrong token */
	MEMSVC_E_STALE = 4,   /* a newer owner holds the namespace */
	MEMSVC_E_NOSPC = 5,   /* over the namespace limit or the service's memory */
	MEMSVC_E_RANGE = 6,   /* page number out of range */
	MEMSVC_E_2BIG = 7,    /* batch too large */
	MEMSVC_E_PROTO = 8,   /* malformed record */
	MEMSVC_E_INVAL = 9,   /* bad argument (name, size, no namespace open) */
	MEMSVC_E_IO = 10,     /* the service failed to store or persist */
	MEMSVC_E_NOMEM = 11,  /* the service is out of memory */
	MEMSVC_E_NOTSUP = 12, /* no RDMA listener, or RDMA refused for this namespace */
	MEMSVC_E_BUSY = 13,   /* DELETE: another connection owns the namespace now */
};

/* HELLO_OK features: what the service offers beyond version 1's core.
 * A service that predates a feature sends 0 there (it was reserved). */
#define MEMSVC_FEAT_RDMA  0x1u /* RDMA_INFO and RDMA_COMMIT are served */
#define MEMSVC_FEAT_ADMIN 0x2u /* DELETE and LIST are served */

#define MEMSVC_MSG_MAX	    200u	 /* ERROR message bytes */
#define MEMSVC_MAX_NS_PAGES (1ull << 28) /* 1 TiB of 4 KiB pages */

/* The largest payload of any record: a WRITE of a full batch. */
#define MEMSVC_MAX_PAYLOAD (8u + MEMSVC_MAX_BATCH * (8u + MEMSVC_PAGE))

struct memsvc_hdr {
	uint32_t magic;
	uint8_t version;
	uint8_t type;
	uint16_t flags;
	uint32_t id;
	uint32_t len;	   /* payload bytes */
	uint32_t crc;	   /* CRC-32C of header (this field 0) and payload */
	uint32_t reserved; /* 0 */
};
_Static_assert(sizeof(struct memsvc_hdr) == MEMSVC_HDR_SIZE, "header layout");

/* HELLO: the versions the client speaks. */
struct memsvc_hello {
	uint16_t min_version;
	uint16_t max_version;
	uint32_t reserved;
};

/* HELLO_OK: the version chosen for the rest of the connection. */
struct memsvc_hello_ok {
	uint16_t version;
	uint16_t reserved;
	uint32_t max_batch;
	uint32_t page_size;
	uint32_t features; /* MEMSVC_FEAT_* */
};

/* CREATE and OPEN: this, then name_len bytes of name and token_len bytes
 * of token. CREATE uses nr_pages and limit_pages, OPEN uses epoch. */
struct memsvc_ns_req {
	uint64_t nr_pages;
	uint64_t limit_pages;
	uint64_t epoch;
	uint8_t name_len;
	uint8_t token_len;
	uint16_t reserved;
	uint32_t reserved2;
};
_Static_assert(sizeof(struct memsvc_ns_req) == 32, "ns request layout");

/* OPEN_OK and INFO_OK. */
struct memsvc_info_wire {
	uint64_t nr_pages;
	uint64_t limit_pages;
	uint64_t used_pages;
	uint64_t epoch;
};

/* DELETE: a memsvc_ns_req (name and token; the numbers 0), as OPEN.
 * DELETE_OK: empty. */

/* LIST: this, then after_len bytes of a name (0: from the first) and
 * token_len bytes of token. LIST_OK: a memsvc_list_ok, then count entries
 * (at most MEMSVC_LIST_MAX): the namespaces created with that token whose
 * names sort after it (bytewise), in that order; more says whether others
 * follow (ask again after the last name). */
#define MEMSVC_LIST_MAX 4u
struct memsvc_list_req {
	uint8_t after_len;
	uint8_t token_len;
	uint16_t reserved;
	uint32_t reserved2;
};
struct memsvc_list_ok {
	uint32_t count;
	uint32_t more;
};
struct memsvc_list_entry {
	struct memsvc_info_wire info;
	uint8_t name_len;
	uint8_t owned; /* a connection holds it at the current epoch */
	uint8_t reserved[6];
	char name[64]; /* name_len bytes, the rest zero */
};
_Static_assert(sizeof(struct memsvc_list_entry) == 104, "list entry layout");

/* READ: this, then n page numbers (uint64). WRITE: the same, then n pages.
 * READ_OK: this, then n flag bytes padded to 8, then the pages that are not
 * MEMSVC_PAGE_ZERO, in request order. WRITE_OK: empty. */
struct memsvc_batch {
	uint32_t n;
	uint32_t reserved;
};

/* RDMA_INFO_OK: where and how the open namespace can be reached one-sided.
 * Page g of the namespace is at addr + g * MEMSVC_PAGE under rkey, for
 * epoch only. cm_host: the rdma_cm listener (cm_host_len bytes, NUL-padded;
 * empty: the host the TCP connection went to), cm_port its port. cookie:
 * the connect private data that binds a QP to this epoch's registration. */
#define MEMSVC_CM_HOST_MAX 63u
struct memsvc_rdma_info_wire {
	uint64_t epoch;
	uint64_t addr;
	uint64_t length; /* nr_pages * MEMSVC_PAGE */
	uint64_t cookie;
	uint32_t rkey;
	uint16_t cm_port;
	uint8_t cm_host_len;
	uint8_t reserved;
	char cm_host[MEMSVC_CM_HOST_MAX + 1];
};
_Static_assert(sizeof(struct memsvc_rdma_info_wire) == 104, "rdma info layout");

/* rdma_cm connect private data (the client's first bytes; a passive side
 * may receive more, padded with zeros). */
struct memsvc_rdma_cm_data {
	uint64_t cookie;
	uint64_t epoch;
};

/* RDMA_COMMIT: a struct memsvc_batch, then n page numbers, as READ. */

/* ERROR: this, then len bytes of message (no NUL). */
struct memsvc_error {
	uint32_t code;
	uint32_t len;
};

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the records are laid out little-endian");

/* The CRC of a header (its crc field taken as 0); continue over the
 * payload with crc32c(). */
static inline uint32_t memsvc_hdr_crc(const struct memsvc_hdr *h)
{
	struct memsvc_hdr t = *h;

	t.crc = 0;
	return crc32c(0, &t, sizeof(t));
}

/* A namespace name: 1..MEMSVC_NAME_MAX bytes of [A-Za-z0-9._-], not
 * starting with '.' (it names files, and dot files are the store's own). */
static inline bool memsvc_name_valid(const char *name, size_t len)
{
	if (len == 0 || len > MEMSVC_NAME_MAX || name[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = name[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
			return false;
	}
	return true;
}

static inline uint32_t memsvc_flags_size(uint32_t n)
{
	return (n + 7u) & ~7u;
}

#endif
