// SPDX-License-Identifier: MIT
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Per-page arrays (a byte to 8 bytes a page: tens of MiB for a large
 * guest) must come from mmap, zeroed lazily by the kernel and only where
 * touched. glibc raises its mmap threshold after a large block is freed
 * (up to 32 MiB), and from then on calloc takes such arrays from the heap
 * and memsets them whole: 44 MiB for an 8 GiB guest's pager, 46-155 ms
 * inside a memsvc migration's downtime when the memory is fresh. A fixed
 * threshold stops that. */
__attribute__((constructor)) static void malloc_fixed_mmap_threshold(void)
{
	mallopt(M_MMAP_THRESHOLD, 256 << 10);
}

int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (*end)
		return -EINVAL;
	if (v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mult = 1;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	switch (toupper((unsigned char)*end)) {
	case '\0':
		break;
	case 'K':
		mult = KiB;
		end++;
		break;
	case 'M':
		mult = MiB;
		end++;
		break;
	case 'G':
		mult = GiB;
		end++;
		break;
	case 'T':
		mult = 1024 * GiB;
		end++;
		break;
	case 'B':
		break;
	default:
		return -EINVAL;
	}
	if (mult > 1 && (*end == 'i' || *end == 'I'))
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end)
		return -EINVAL;
	if (v > UINT64_MAX / mult)
		return -ERANGE;
	*out = v * mult;
	return 0;
}

const char *fmt_size(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	unsigned u = 0;
	uint64_t v = bytes;

	while (u + 1 < ARRAY_SIZE(units) && v >= 1024 && v % 1024 == 0) {
		v /= 1024;
		u++;
	}
	if (v < 1024 || u + 1 == ARRAY_SIZE(units)) {
		snprintf(buf, len, "%llu %s", (unsigned long long)v, units[u]);
		return buf;
	}
	/* Not a whole number of any larger unit: one decimal of the largest. */
	double d = (double)bytes;
	for (u = 0; u + 1 < ARRAY_SIZE(units) && d >= 1024; u++)
		d /= 1024;
	snprintf(buf, len, "%.1f %s", d, units[u]);
	return buf;
}

/* The kernel's struct sched_attr, its first version (48 bytes); glibc has
 * no wrapper, and the uapi header clashes with <sched.h>. */
struct sched_attr_v0 {
	uint32_t size, sched_policy;
	uint64_t sched_flags;
	int32_t sched_nice;
	uint32_t sched_priority;
	uint64_t sched_runtime, sched_deadline, sched_period;
};

void thread_latency(bool on)
{
	struct sched_attr_v0 a = {.size = sizeof(a), .sched_policy = SCHED_OTHER};

	/* A thread someone made real-time (chrt) or batch keeps its class. */
	if (sched_getscheduler(0) != SCHED_OTHER)
		return;
	errno = 0;
	a.sched_nice = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
	if (errno)
		return;
	a.sched_runtime = on ? 100 * 1000 : 0; /* ns: the shortest slice the kernel takes */
	if (syscall(SYS_sched_setattr, 0, &a, 0))
		log_debug("short time slices: %s", strerror(errno));
}

bool page_is_zero(const void *page)
{
	const uint64_t *w = page;

	if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7])
		return false;
	for (unsigned i = 8; i < 4096 / 8; i += 24) {
		uint64_t acc = 0;
		for (unsigned j = 0; j < 24; j++) /* 8 + 21 * 24 = 512 words */
			acc |= w[i + j];
		if (acc)
			return false;
	}
	return true;
}

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t host_mem_total(void)
{
	struct sysinfo si;

	if (sysinfo(&si))
		return 0;
	return (uint64_t)si.totalram * si.mem_unit;
}

void thread_name(const char *fmt, ...)
{
	char name[16];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	pthread_setname_np(pthread_self(), name);
}
