// SPDX-License-Identifier: MIT
#include "proc.h"

#include "test.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

pid_t proc_spawn(const char *log, const char *const *argv)
{
	/* Empty before the fork: a caller that waits for a line in the log
	 * must not find it in an earlier process's log of the same name. */
	int lfd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (lfd >= 0)
		close(lfd);
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(fd, 1);
		dup2(fd, 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

int proc_wait(pid_t pid, int timeout_s)
{
	int status;

	for (int i = 0; i < timeout_s * 10; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		usleep(100000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	return -1;
}

static void read_at(const char *path, char *buf, size_t len, int tail)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	off_t from = 0;
	ssize_t got = -1;

	if (fd >= 0 && !fstat(fd, &st)) {
		if (tail && st.st_size > (off_t)len - 1)
			from = st.st_size - ((off_t)len - 1);
		got = pread(fd, buf, len - 1, from);
	}
	if (fd >= 0)
		close(fd);
	buf[got > 0 ? got : 0] = 0;
}

void proc_read_file(const char *path, char *buf, size_t len)
{
	read_at(path, buf, len, 0);
}

bool proc_wait_log(const char *path, const char *text, int timeout_s)
{
	static char buf[65536];

	for (int i = 0; i < timeout_s * 20; i++) {
		proc_read_file(path, buf, sizeof(buf));
		if (strstr(buf, text))
			return true;
		usleep(50000);
	}
	return false;
}

void proc_read_tail(const char *path, char *buf, size_t len)
{
	read_at(path, buf, len, 1);
}

int proc_flitctl(const char *sock, const char *log, char *out, size_t len, const char *const *args)
{
	const char *argv[16] = {test_build_path("flitctl"), "--api", sock};
	unsigned n = 3;

	for (; *args && n < 15; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	int rc = proc_wait(proc_spawn(log, argv), 120);
	/* The end of the output: a followed migration prints many progress
	 * lines before its report. */
	proc_read_tail(log, out, len);
	if (strcmp(argv[3], "migrate-status"))
		printf("  flitctl %s -> %d: %.200s\n", argv[3], rc, out);
	return rc;
}

void proc_flitctl_wait_ended(const char *sock, const char *log, char *out, size_t len,
			     int timeout_s)
{
	static const char *const status[] = {"migrate-status", NULL};

	for (int i = 0; i < timeout_s * 10; i++) {
		proc_flitctl(sock, log, out, len, status);
		if (!strstr(out, "\"status\":\"active\""))
			return;
		usleep(100000);
	}
}
