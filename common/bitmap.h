/* SPDX-License-Identifier: MIT */
/*
 * Page bitmaps: one bit per guest page, 64-bit words, little-endian bit order
 * within a word (bit n of word w is page 64*w + n), which is also KVM's dirty
 * log layout on x86. Atomic variants are for bitmaps written by several
 * threads (devices on vCPU threads marking their own writes).
 */
#ifndef FLIT_COMMON_BITMAP_H
#define FLIT_COMMON_BITMAP_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#define BITMAP_WORDS(nbits) (((nbits) + 63) / 64)

static inline uint64_t *bitmap_alloc(uint64_t nbits)
{
	return calloc(BITMAP_WORDS(nbits) ? BITMAP_WORDS(nbits) : 1, sizeof(uint64_t));
}

static inline void bitmap_set(uint64_t *map, uint64_t bit)
{
	map[bit / 64] |= 1ULL << (bit % 64);
}

static inline void bitmap_clear(uint64_t *map, uint64_t bit)
{
	map[bit / 64] &= ~(1ULL << (bit % 64));
}

static inline bool bitmap_test(const uint64_t *map, uint64_t bit)
{
	return (map[bit / 64] >> (bit % 64)) & 1;
}

/* Sets the bit; returns whether it was set before. */
static inline bool bitmap_test_and_set_atomic(uint64_t *map, uint64_t bit)
{
	uint64_t m = 1ULL << (bit % 64);
	return __atomic_fetch_or(&map[bit / 64], m, __ATOMIC_ACQ_REL) & m;
}

/* Number of set bits in the first nbits. */
uint64_t bitmap_weight(const uint64_t *map, uint64_t nbits);

/* Index of the next set bit at or after 'from', or nbits if none. */
uint64_t bitmap_next_set(const uint64_t *map, uint64_t nbits, uint64_t from);
/* Index of the next clear bit at or after 'from', or nbits if none. */
uint64_t bitmap_next_clear(const uint64_t *map, uint64_t nbits, uint64_t from);

#define bitmap_for_each_set(bit, map, nbits)                              \
	for ((bit) = bitmap_next_set((map), (nbits), 0); (bit) < (nbits); \
	     (bit) = bitmap_next_set((map), (nbits), (bit) + 1))

#endif
