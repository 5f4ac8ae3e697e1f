// SPDX-License-Identifier: MIT
#include "transport.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int transport_read_full(int fd, void *buf, size_t len, bool sock, char *why, size_t whylen)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t r = sock ? recv(fd, p, len, MSG_WAITALL) : read(fd, p, len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				snprintf(why, whylen, "peer silent past the timeout");
				return -ETIMEDOUT;
			}
			return -errno;
		}
		if (r == 0) {
			snprintf(why, whylen, "peer closed the connection");
			return -ECONNRESET;
		}
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

static const struct transport_ops *const all[] = {&transport_uring, &transport_sync};

const struct transport_ops *transport_find(const char *name)
{
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (!strcmp(all[i]->name, name))
			return all[i];
	return NULL;
}

const char *transport_names(void)
{
	return "uring, sync";
}
