// SPDX-License-Identifier: MIT
#include "bitmap.h"

uint64_t bitmap_weight(const uint64_t *map, uint64_t nbits)
{
	uint64_t n = 0, w, full = nbits / 64;

	for (w = 0; w < full; w++)
		n += (uint64_t)__builtin_popcountll(map[w]);
	if (nbits % 64)
		n += (uint64_t)__builtin_popcountll(map[w] & ((1ULL << (nbits % 64)) - 1));
	return n;
}

/* The next bit at or after from that is set in map ^ flip (flip 0: set
 * bits; ~0: clear ones), a word at a time. */
static uint64_t next_bit(const uint64_t *map, uint64_t nbits, uint64_t from, uint64_t flip)
{
	uint64_t w, word;

	if (from >= nbits)
		return nbits;
	w = from / 64;
	word = (map[w] ^ flip) & (~0ULL << (from % 64));
	for (;;) {
		if (word) {
			uint64_t bit = w * 64 + (uint64_t)__builtin_ctzll(word);
			return bit < nbits ? bit : nbits;
		}
		if (++w >= BITMAP_WORDS(nbits))
			return nbits;
		word = map[w] ^ flip;
	}
}

uint64_t bitmap_next_set(const uint64_t *map, uint64_t nbits, uint64_t from)
{
	return next_bit(map, nbits, from, 0);
}

uint64_t bitmap_next_clear(const uint64_t *map, uint64_t nbits, uint64_t from)
{
	return next_bit(map, nbits, from, ~0ULL);
}
