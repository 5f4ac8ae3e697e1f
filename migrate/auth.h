/* SPDX-License-Identifier: MIT */
/* Challenge-response over a shared token: HMAC-SHA256(token, label ||
 * nonce || session). Neither side sends the token; each proves it knows it
 * by answering the other's fresh nonce. */
#ifndef FLIT_MIGRATE_AUTH_H
#define FLIT_MIGRATE_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

int mig_random(void *buf, size_t len);
void mig_mac(const uint8_t *token, size_t token_len, const char *label,
	     const uint8_t nonce[MIG_NONCE_LEN], const uint8_t session[16],
	     uint8_t out[MIG_MAC_LEN]);
/* Constant-time comparison: 1 if equal. */
int mig_mac_equal(const uint8_t *a, const uint8_t *b);

#endif
