// SPDX-License-Identifier: MIT
#include "dirty.h"

#include <string.h>

const struct dirty_ops *dirty_ops_by_name(const struct dirty_ops *bitmap,
					  const struct dirty_ops *ring, const char *name)
{
	if (!name || !strcmp(name, "bitmap"))
		return bitmap;
	if (!strcmp(name, "ring"))
		return ring;
	return NULL;
}
