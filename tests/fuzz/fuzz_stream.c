// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: the migration stream reader (record headers, sequence,
 * lengths, checksums, the structure of every record type) fed arbitrary
 * bytes as one captured connection. It must return an error or reach the
 * end, never crash, hang or read out of bounds (built with ASan + UBSan).
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "migrate/dump.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mig_dump_stats st;
	char why[256];
	int fd = memfd_create("fuzz", MFD_CLOEXEC);

	if (fd < 0)
		return 0;
	if (write(fd, data, size) == (ssize_t)size && lseek(fd, 0, SEEK_SET) == 0)
		(void)mig_dump(fd, NULL, &st, why, sizeof(why));
	close(fd);
	return 0;
}
