// SPDX-License-Identifier: MIT
/*
 * flit-dump: prints the records of a captured migration connection and
 * checks them as a destination would (checksums, sequence, sizes).
 *
 *   FLIT_MIGRATION_CAPTURE=/tmp/cap flit --guest ... --migrate-to ...
 *   flit-dump /tmp/cap/channel-0.bin
 *
 * Exit status 0 if the stream is well formed to its end, 1 otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "migrate/dump.h"

int main(int argc, char **argv)
{
	struct mig_dump_stats st;
	char why[256] = "";
	int status = 0;

	log_set_prefix("flit-dump");
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fprintf(argc < 2 ? stderr : stdout, "usage: flit-dump CAPTURE-FILE...\n");
		return argc < 2 ? 64 : 0;
	}
	for (int i = 1; i < argc; i++) {
		int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			log_err("%s: %s", argv[i], strerror(errno));
			status = 1;
			continue;
		}
		printf("== %s\n", argv[i]);
		int r = mig_dump(fd, stdout, &st, why, sizeof(why));
		close(fd);
		printf("%llu records, %llu pages, %llu zero pages, %llu bytes%s%s\n",
		       (unsigned long long)st.records, (unsigned long long)st.pages,
		       (unsigned long long)st.zero_pages, (unsigned long long)st.bytes,
		       r ? ": BAD STREAM: " : "", r ? why : "");
		if (r)
			status = 1;
	}
	return status;
}
