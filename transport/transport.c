// SPDX-License-Identifier: MIT
#include "transport.h"

#include <string.h>

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
