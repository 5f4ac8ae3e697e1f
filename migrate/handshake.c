// SPDX-License-Identifier: MIT
#include "handshake.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"

int mig_handshake_connect(struct mig_conn *c, const uint8_t *token, size_t token_len,
			  const struct mig_hello *hello)
{
	struct mig_challenge ch;
	struct mig_auth au;
	uint8_t mac[MIG_MAC_LEN];
	int r;

	r = mig_send_stream_hdr(c);
	if (!r)
		r = mig_send_rec(c, MIG_REC_HELLO, hello, sizeof(*hello));
	if (!r)
		r = mig_recv_stream_hdr(c);
	if (!r)
		r = mig_recv_expect(c, MIG_REC_CHALLENGE, &ch, sizeof(ch));
	if (r)
		return r;
	mig_mac(token, token_len, "flit-dst", hello->nonce, hello->session, mac);
	if (!mig_mac_equal(mac, ch.mac)) {
		snprintf(c->why, sizeof(c->why),
			 "the destination does not know the migration token");
		mig_send_error(c, -EACCES, "authentication failed");
		return -EACCES;
	}
	mig_mac(token, token_len, "flit-src", ch.nonce, hello->session, au.mac);
	r = mig_send_rec(c, MIG_REC_AUTH, &au, sizeof(au));
	if (!r)
		r = mig_recv_expect(c, MIG_REC_ACCEPT, NULL, 0);
	if (r == -ECONNABORTED && strstr(c->why, "authentication"))
		return -EACCES;
	return r;
}

int mig_handshake_accept(struct mig_conn *c, const uint8_t *token, size_t token_len,
			 struct mig_hello *hello, mig_hello_check_fn check, void *opaque)
{
	struct mig_challenge ch;
	struct mig_auth au;
	uint8_t mac[MIG_MAC_LEN];
	int r;

	r = mig_recv_stream_hdr(c);
	if (!r)
		r = mig_recv_expect(c, MIG_REC_HELLO, hello, sizeof(*hello));
	if (r)
		return r;
	r = mig_random(ch.nonce, sizeof(ch.nonce));
	if (r)
		return r;
	mig_mac(token, token_len, "flit-dst", hello->nonce, hello->session, ch.mac);
	r = mig_send_stream_hdr(c);
	if (!r)
		r = mig_send_rec(c, MIG_REC_CHALLENGE, &ch, sizeof(ch));
	if (!r)
		r = mig_recv_expect(c, MIG_REC_AUTH, &au, sizeof(au));
	if (r)
		return r;
	mig_mac(token, token_len, "flit-src", ch.nonce, hello->session, mac);
	if (!mig_mac_equal(mac, au.mac)) {
		snprintf(c->why, sizeof(c->why), "the source does not know the migration token");
		mig_send_error(c, -EACCES, "authentication failed");
		return -EACCES;
	}
	if (check) {
		r = check(opaque, hello, c->why, sizeof(c->why));
		if (r) {
			mig_send_error(c, r, "%s", c->why);
			return r;
		}
	}
	return mig_send_rec(c, MIG_REC_ACCEPT, NULL, 0);
}
