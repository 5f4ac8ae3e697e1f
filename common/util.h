/* SPDX-License-Identifier: MIT */
/* Small helpers shared by every library: sizes, time, alignment. */
#ifndef FLIT_COMMON_UTIL_H
#define FLIT_COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a)	 (sizeof(a) / sizeof((a)[0]))
#define ALIGN_UP(x, a)	 (((x) + ((a)-1)) & ~((__typeof__(x))(a)-1))
#define IS_ALIGNED(x, a) (((x) & ((__typeof__(x))(a)-1)) == 0)
#define MIN(a, b)	 ((a) < (b) ? (a) : (b))
#define MAX(a, b)	 ((a) > (b) ? (a) : (b))

#define KiB (1024ULL)
#define MiB (1024ULL * KiB)
#define GiB (1024ULL * MiB)

/*
 * Parses a size such as "512M", "2G", "4096", "64k" (binary units, optional
 * trailing 'B' or "iB"). A bare number is bytes. Returns 0, -EINVAL for
 * anything that is not a well-formed size, -ERANGE on overflow.
 */
int parse_size(const char *s, uint64_t *out);

/* Parses an unsigned decimal integer in [min, max]; -EINVAL / -ERANGE. */
int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Formats a byte count as "2 GiB", "512 MiB", "4096 B" into buf. */
const char *fmt_size(uint64_t bytes, char *buf, size_t len);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t now_ns(void);
/* Names the calling thread (top -H, perf, gdb): printf-style, cut to the
 * kernel's 15 bytes. */
void thread_name(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Asks the scheduler for short time slices for the calling thread (on):
 * a thread that sleeps most of the time and must answer at once when woken
 * (a post-copy fault's round trip) then preempts busy threads sooner on a
 * loaded machine. Off: the default slice again. Best effort (Linux 6.12
 * and later take the hint; earlier ones ignore it); a thread outside the
 * normal scheduling class is left as it is. */
void thread_latency(bool on);

/* Whether the 4096 bytes at page are all zero. A page that is not shows it
 * in its first bytes almost always: those are looked at first, then the
 * rest a few cache lines at a time, stopping at the first non-zero byte. */
bool page_is_zero(const void *page);

/* Total physical memory of this machine in bytes (0 if unknown). */
uint64_t host_mem_total(void);

#endif
