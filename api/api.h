/* SPDX-License-Identifier: MIT */
/*
 * The control API of one flit process: a unix socket speaking JSON, one
 * request per line, one reply per line (docs/api.md). It serves on its own
 * thread; a migration it starts runs on another, which owns the VM until it
 * ends (and hands it back running if it fails).
 */
#ifndef FLIT_API_API_H
#define FLIT_API_API_H

#include <stdbool.h>

#include "migrate/migrate.h"

struct vm;
struct api_server;

/* Serves path (replacing a stale socket). defaults: the migration settings
 * from the command line (token, channels, ...), used where a request is
 * silent. -errno with a logged reason. */
int api_start(const char *path, struct vm *vm, const struct mig_params *defaults,
	      struct api_server **out);
/* Stops serving, waits for a running migration to end (cancelling it), and
 * removes the socket. Tolerates NULL. */
void api_stop(struct api_server *s);

/* The guest has migrated away: this process should end. */
bool api_migrated(struct api_server *s);
/* After a migration ended: wait (up to timeout_ms) until a client has read
 * its final status, so that `flitctl migrate` sees the report before this
 * process leaves. */
void api_wait_final_read(struct api_server *s, int timeout_ms);

/* A client asked this flit to quit. */
bool api_quit_requested(struct api_server *s);
/* A post-copy through the API broke after the switch and was not
 * recovered: the copy here is stale and must never run again. */
bool api_lost(struct api_server *s);

#endif
