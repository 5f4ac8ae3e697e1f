/* SPDX-License-Identifier: MIT */
/*
 * The memcheck pattern, shared by the guest (which writes and verifies it)
 * and the VMM (which verifies it from the host side). A page's content is a
 * function of its page number and its generation, so a page that is stale
 * (old generation), misplaced (another page's data) or torn is detected.
 * Generation 0 means "never written": the page must be all zero.
 */
#ifndef FLIT_GUESTS_PATTERN_H
#define FLIT_GUESTS_PATTERN_H

#include <stdint.h>

#define FLIT_WORDS_PER_PAGE 512

static inline uint64_t flit_pattern_seed(uint64_t page, uint32_t gen)
{
	uint64_t x = page * 0x9e3779b97f4a7c15ULL ^ ((uint64_t)gen << 32 | gen);

	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 29;
	return x | 1; /* never zero, so gen >= 1 differs from a zero page */
}

static inline uint64_t flit_pattern_word(uint64_t seed, unsigned word)
{
	return seed ^ ((uint64_t)word * 0x94d049bb133111ebULL);
}

static inline void flit_pattern_fill(volatile uint64_t *p, uint64_t page, uint32_t gen)
{
	uint64_t seed = flit_pattern_seed(page, gen);

	for (unsigned w = 0; w < FLIT_WORDS_PER_PAGE; w++)
		p[w] = gen ? flit_pattern_word(seed, w) : 0;
}

/* 1 if the page holds generation gen exactly. */
static inline int flit_pattern_check(const volatile uint64_t *p, uint64_t page, uint32_t gen)
{
	uint64_t seed = flit_pattern_seed(page, gen);

	for (unsigned w = 0; w < FLIT_WORDS_PER_PAGE; w++)
		if (p[w] != (gen ? flit_pattern_word(seed, w) : 0))
			return 0;
	return 1;
}

/* 1 if every word holds generation gen or gen + 1 (a page being rewritten). */
static inline int flit_pattern_check_torn(const volatile uint64_t *p, uint64_t page, uint32_t gen)
{
	uint64_t s0 = flit_pattern_seed(page, gen), s1 = flit_pattern_seed(page, gen + 1);

	for (unsigned w = 0; w < FLIT_WORDS_PER_PAGE; w++) {
		uint64_t v = p[w];
		if (v != (gen ? flit_pattern_word(s0, w) : 0) && v != flit_pattern_word(s1, w))
			return 0;
	}
	return 1;
}

/*
 * Which pages the dirtyset guest writes in round r (r >= 1), and which of
 * those it writes twice. Shared with the dirty-log tests, which expect
 * exactly this set. Different every round; roughly one page in five.
 */
static inline uint64_t flit_mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

static inline int flit_dirtyset_selected(uint64_t index, uint32_t round, uint32_t seed)
{
	return flit_mix(index ^ ((uint64_t)round << 40) ^ ((uint64_t)seed << 20)) % 5 == 0;
}

static inline int flit_dirtyset_twice(uint64_t index, uint32_t round, uint32_t seed)
{
	return flit_mix(index + round + seed) % 3 == 0;
}

#endif
