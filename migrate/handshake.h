/* SPDX-License-Identifier: MIT */
/* The opening of every migration connection (wire.h): stream headers,
 * HELLO, CHALLENGE, AUTH, ACCEPT. No guest data moves before it succeeds. */
#ifndef FLIT_MIGRATE_HANDSHAKE_H
#define FLIT_MIGRATE_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

#include "conn.h"

/* Source side. -EACCES if the destination does not prove the token. */
int mig_handshake_connect(struct mig_conn *c, const uint8_t *token, size_t token_len,
			  const struct mig_hello *hello);

/* Destination side: reads HELLO into *hello, authenticates the source,
 * then asks check (if not NULL) whether to take this connection: a non-zero
 * answer is sent to the source as an ERROR with the reason in c->why, in
 * place of ACCEPT. -EACCES (after telling the peer) if the source does not
 * prove the token. */
typedef int (*mig_hello_check_fn)(void *opaque, const struct mig_hello *hello, char *why,
				  size_t len);
int mig_handshake_accept(struct mig_conn *c, const uint8_t *token, size_t token_len,
			 struct mig_hello *hello, mig_hello_check_fn check, void *opaque);

#endif
