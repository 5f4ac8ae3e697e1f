// SPDX-License-Identifier: MIT
#include "auth.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>
#include <sys/random.h>

int mig_random(void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = getrandom(p, len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

void mig_mac(const uint8_t *token, size_t token_len, const char *label,
	     const uint8_t nonce[MIG_NONCE_LEN], const uint8_t session[16],
	     uint8_t out[MIG_MAC_LEN])
{
	uint8_t msg[16 + MIG_NONCE_LEN + 16];
	unsigned int outlen = MIG_MAC_LEN;

	memset(msg, 0, sizeof(msg));
	memcpy(msg, label, strnlen(label, 16));
	memcpy(msg + 16, nonce, MIG_NONCE_LEN);
	memcpy(msg + 16 + MIG_NONCE_LEN, session, 16);
	HMAC(EVP_sha256(), token, (int)token_len, msg, sizeof(msg), out, &outlen);
}

int mig_mac_equal(const uint8_t *a, const uint8_t *b)
{
	uint8_t d = 0;

	for (unsigned i = 0; i < MIG_MAC_LEN; i++)
		d |= a[i] ^ b[i];
	return d == 0;
}
