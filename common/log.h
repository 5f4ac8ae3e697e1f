/* SPDX-License-Identifier: MIT */
/*
 * Logging. One process-wide level, set once in main() before threads start
 * (log_set_level) or from FLIT_LOG=debug|info|warn|err. Lines go to stderr,
 * each written with a single write(2) so lines from vCPU threads never
 * interleave. Never call on a per-page hot path: count instead.
 */
#ifndef FLIT_COMMON_LOG_H
#define FLIT_COMMON_LOG_H

enum log_level { LOG_ERR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Reads FLIT_LOG from the environment; returns -EINVAL for an unknown word. */
int log_init_from_env(void);
/* Prefix for every line (the program name); the string must outlive logging. */
void log_set_prefix(const char *prefix);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...)   log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* Prints "prefix: message" and exits with status 1. For main() and tests only. */
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
