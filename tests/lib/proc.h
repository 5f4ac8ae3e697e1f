/* SPDX-License-Identifier: MIT */
/* Helpers for tests that run flit and flitctl as separate processes. */
#ifndef FLIT_TESTS_PROC_H
#define FLIT_TESTS_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Starts argv (argv[0] a path) with stdout and stderr in the file log. */
pid_t proc_spawn(const char *log, const char *const *argv);
/* Its exit status (128 + signal if killed); after timeout_s it is killed
 * and -1 returned. */
int proc_wait(pid_t pid, int timeout_s);
/* The first len - 1 bytes of a file, NUL-terminated ("" if unreadable). */
void proc_read_file(const char *path, char *buf, size_t len);
/* Waits (up to timeout_s) until the file holds text: a process started
 * with proc_spawn has logged it. */
bool proc_wait_log(const char *path, const char *text, int timeout_s);
/* The last len - 1 bytes of a file, NUL-terminated. */
void proc_read_tail(const char *path, char *buf, size_t len);

/* flitctl --api sock with the words args (NULL-terminated), its output in
 * log and the end of it in out; echoed unless the command is
 * migrate-status (polled: too many lines). Its exit status. */
int proc_flitctl(const char *sock, const char *log, char *out, size_t len, const char *const *args);
/* Polls migrate-status every 0.1 s until the migration is no longer active
 * (or timeout_s); out holds the last answer. */
void proc_flitctl_wait_ended(const char *sock, const char *log, char *out, size_t len,
			     int timeout_s);

#endif
