// SPDX-License-Identifier: MIT
/* Sizes, numbers, page bitmaps, CRC-32C and zero pages. */
#include <errno.h>
#include <string.h>

#include "common/bitmap.h"
#include "common/crc32c.h"
#include "common/util.h"
#include "tests/lib/test.h"

static void parse_size_accepts_units(void)
{
	static const struct {
		const char *s;
		uint64_t v;
	} ok[] = {
	    {"0", 0},	       {"4096", 4096},	    {"64k", 64 * KiB},
	    {"64K", 64 * KiB}, {"256M", 256 * MiB}, {"256MiB", 256 * MiB},
	    {"2G", 2 * GiB},   {"2GB", 2 * GiB},    {"1T", 1024 * GiB},
	    {"512B", 512},
	};
	for (unsigned i = 0; i < ARRAY_SIZE(ok); i++) {
		uint64_t v = 1;
		int r = parse_size(ok[i].s, &v);
		TEST_ASSERT(r == 0 && v == ok[i].v, "parse_size(%s) = %d, %llu", ok[i].s, r,
			    (unsigned long long)v);
	}
}

static void parse_size_rejects_garbage(void)
{
	static const char *const bad[] = {"",	  "M",	"-1", "12Q",   "1.5G", "2GG",
					  "0x10", " 1", "1 ", "1Mi B", "G2"};
	for (unsigned i = 0; i < ARRAY_SIZE(bad); i++) {
		uint64_t v = 7;
		TEST_ASSERT(parse_size(bad[i], &v) == -EINVAL && v == 7, "'%s' accepted", bad[i]);
	}
	uint64_t v;
	TEST_ASSERT_EQ(parse_size("99999999999999999999", &v), -ERANGE);
	TEST_ASSERT_EQ(parse_size("17179869184G", &v), -ERANGE);
	TEST_ASSERT_EQ(parse_size(NULL, &v), -EINVAL);
}

static void parse_uint_bounds(void)
{
	uint64_t v;
	TEST_ASSERT_EQ(parse_uint("5", 1, 32, &v), 0);
	TEST_ASSERT_EQ(v, 5);
	TEST_ASSERT_EQ(parse_uint("0", 1, 32, &v), -ERANGE);
	TEST_ASSERT_EQ(parse_uint("33", 1, 32, &v), -ERANGE);
	TEST_ASSERT_EQ(parse_uint("3x", 1, 32, &v), -EINVAL);
	TEST_ASSERT_EQ(parse_uint("-3", 1, 32, &v), -EINVAL);
}

static void bitmap_ops(void)
{
	uint64_t *m = bitmap_alloc(200);
	uint64_t bit, n = 0;
	static const uint64_t set[] = {0, 1, 63, 64, 127, 128, 199};

	for (unsigned i = 0; i < ARRAY_SIZE(set); i++)
		bitmap_set(m, set[i]);
	TEST_ASSERT_EQ(bitmap_weight(m, 200), ARRAY_SIZE(set));
	TEST_ASSERT_EQ(bitmap_weight(m, 64), 3);
	bitmap_for_each_set(bit, m, 200)
	{
		TEST_ASSERT(n < ARRAY_SIZE(set) && bit == set[n], "bit %llu at %llu",
			    (unsigned long long)bit, (unsigned long long)n);
		n++;
	}
	TEST_ASSERT_EQ(n, ARRAY_SIZE(set));
	bitmap_clear(m, 64);
	TEST_ASSERT(!bitmap_test(m, 64), "cleared");
	TEST_ASSERT_EQ(bitmap_next_set(m, 200, 64), 127);
	TEST_ASSERT_EQ(bitmap_next_set(m, 199, 129), 199); /* none below nbits */
	/* Clear bits: each against a page-at-a-time scan, from everywhere. */
	for (uint64_t from = 0; from <= 200; from++) {
		uint64_t want = from;
		while (want < 200 && bitmap_test(m, want))
			want++;
		TEST_ASSERT_EQ(bitmap_next_clear(m, 200, from), want);
	}
	for (uint64_t i = 0; i < 200; i++)
		bitmap_set(m, i);
	TEST_ASSERT_EQ(bitmap_next_clear(m, 200, 0),
		       200); /* the last word's tail is no clear bit */
	TEST_ASSERT_EQ(bitmap_next_clear(m, 130, 5), 130);
	free(m);
}

/* The known check value, and the fast path (three interleaved streams on
 * long buffers) equal to the table reference for every length class,
 * alignment and continuation. */
static void crc32c_matches_reference(void)
{
	static uint8_t buf[100000 + 16];
	uint64_t x = 0x9e3779b97f4a7c15ull;

	TEST_ASSERT_EQ(crc32c(0, "123456789", 9), 0xe3069283u);
	TEST_ASSERT_EQ(crc32c_portable(0, "123456789", 9), 0xe3069283u);
	for (size_t i = 0; i < sizeof(buf); i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		buf[i] = (uint8_t)x;
	}
	static const size_t lens[] = {0,     1,	    7,	   8,	  4095,	 4096,	12287,
				      12288, 12289, 24576, 36871, 65552, 100000};
	for (size_t l = 0; l < ARRAY_SIZE(lens); l++)
		for (size_t off = 0; off < 9; off++) {
			uint32_t a = crc32c(0, buf + off, lens[l]);
			uint32_t b = crc32c_portable(0, buf + off, lens[l]);
			TEST_ASSERT(a == b, "length %zu offset %zu: %08x, reference %08x", lens[l],
				    off, a, b);
		}
	/* Continuing over pieces gives the CRC of the whole. */
	uint32_t whole = crc32c(0, buf, 100000), parts = 0;
	for (size_t at = 0, step = 1; at < 100000; at += step, step = step * 3 + 1)
		parts = crc32c(parts, buf + at, step < 100000 - at ? step : 100000 - at);
	TEST_ASSERT_EQ(parts, whole);
	/* And a changed byte anywhere changes it. */
	buf[77777] ^= 1;
	TEST_ASSERT(crc32c(0, buf, 100000) != whole, "a flipped bit went unseen");
}

static void fmt_size_readable(void)
{
	char b[32];
	TEST_ASSERT(!strcmp(fmt_size(2 * GiB, b, sizeof(b)), "2 GiB"), "%s", b);
	TEST_ASSERT(!strcmp(fmt_size(256 * MiB, b, sizeof(b)), "256 MiB"), "%s", b);
	TEST_ASSERT(!strcmp(fmt_size(100, b, sizeof(b)), "100 B"), "%s", b);
}

/* A single non-zero bit anywhere in the page is seen, wherever the early
 * checks and the blocks put it; an all-zero page is zero. */
static void page_is_zero_sees_every_byte(void)
{
	static uint64_t page[512] __attribute__((aligned(4096)));

	memset(page, 0, sizeof(page));
	TEST_ASSERT(page_is_zero(page), "a zero page is not zero");
	uint8_t *b = (uint8_t *)page;
	for (unsigned i = 0; i < 4096; i++) {
		b[i] = (uint8_t)(1u << (i % 8));
		TEST_ASSERT(!page_is_zero(page), "byte %u set, page called zero", i);
		b[i] = 0;
	}
	TEST_ASSERT(page_is_zero(page), "the page is zero again");
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
	    TEST_CASE(parse_size_accepts_units),
	    TEST_CASE(parse_size_rejects_garbage),
	    TEST_CASE(parse_uint_bounds),
	    TEST_CASE(bitmap_ops),
	    TEST_CASE(fmt_size_readable),
	    TEST_CASE(crc32c_matches_reference),
	    TEST_CASE(page_is_zero_sees_every_byte),
	};
	return test_main(argc, argv, cases, ARRAY_SIZE(cases));
}
