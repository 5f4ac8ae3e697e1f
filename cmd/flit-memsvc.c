// SPDX-License-Identifier: MIT
/*
 * flit-memsvc: the remote-memory service. Holds guest pages for many
 * namespaces and serves them over TCP (docs/memsvc.md).
 *
 *   flit-memsvc --listen 0.0.0.0:4610 --dir /var/lib/flit-memsvc
 *
 * and looks after a running service's namespaces, given the token file
 * the guests' flit was given:
 *
 *   flit-memsvc list HOST[:PORT] --token-file T
 *   flit-memsvc delete memsvc://HOST[:PORT]/NAMESPACE --token-file T
 *
 * Exit status: 0 after SIGTERM/SIGINT (or a command done), 1 when it cannot
 * start (address in use, unreadable store) or the service refused the
 * command, 2 for a bad command line, 3 when --rdma is given but this
 * machine has no RDMA device (or no rdma_cm).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "memsvc/client.h"
#include "migrate/migrate.h"
#include "memsvc/rdma.h"
#include "memsvc/server.h"

#define EXIT_USAGE   2
#define EXIT_NO_RDMA 3

static void usage(FILE *f)
{
	fprintf(f,
		"usage: flit-memsvc --listen [tcp:]HOST[:PORT] [options]\n"
		"\n"
		"  --listen ADDR     address to serve on (port %u if none; 0 = any free port)\n"
		"  --rdma ADDR       also serve pages one-sided on this rdma_cm address\n"
		"                    (port %u if none); needs an RDMA device\n"
		"  --dir DIR         keep pages and namespaces in DIR (they survive a restart);\n"
		"                    without it, pages live in memory only\n"
		"  --sync            with --dir: data on disk before a write is acknowledged\n"
		"  --max-mem SIZE    cap on the sum of namespace limits, e.g. 512M or 2G\n"
		"  -v, --verbose     debug logging (also FLIT_LOG=debug)\n"
		"  -h, --help        this text\n"
		"\n"
		"usage: flit-memsvc list HOST[:PORT] --token-file FILE\n"
		"       flit-memsvc delete memsvc://HOST[:PORT]/NAMESPACE --token-file FILE\n"
		"\n"
		"  list     the namespaces of that token: size, pages stored, owner\n"
		"  delete   a namespace and its pages, unless a guest runs on it now\n"
		"  FILE is the --token-file the guests' flit was given.\n",
		MEMSVC_DEFAULT_PORT, MEMSVC_DEFAULT_RDMA_PORT);
}

__attribute__((format(printf, 1, 2))) static int bad_usage(const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_err("%s (see flit-memsvc --help)", msg);
	return EXIT_USAGE;
}

/* list and delete: a client of a running service. */
static int command(int argc, char **argv)
{
	const char *cmd = argv[1], *target = NULL, *token_file = NULL;
	char host[256], ns[MEMSVC_NAME_MAX + 1] = "", why[300], token[2 * MIG_TOKEN_MAX + 1];
	uint8_t secret[MIG_TOKEN_MAX];
	size_t secret_len;
	uint16_t port = MEMSVC_DEFAULT_PORT;
	int r;

	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--token-file") && i + 1 < argc)
			token_file = argv[++i];
		else if (!strncmp(argv[i], "--token-file=", 13))
			token_file = argv[i] + 13;
		else if (argv[i][0] != '-' && !target)
			target = argv[i];
		else
			return bad_usage("%s: unexpected argument %s", cmd, argv[i]);
	}
	if (!target || !token_file)
		return bad_usage("%s needs %s and --token-file", cmd,
				 !strcmp(cmd, "list") ? "HOST[:PORT]"
						      : "memsvc://HOST[:PORT]/NAMESPACE");
	if (!strcmp(cmd, "delete")) {
		if (memsvc_parse_url(target, host, sizeof(host), &port, ns, sizeof(ns), why,
				     sizeof(why)))
			return bad_usage("delete %s: %s", target, why);
	} else if (memsvc_parse_listen(target, host, sizeof(host), &port)) {
		return bad_usage("list %s: an address is HOST[:PORT]", target);
	}
	r = mig_read_token(token_file, secret, &secret_len);
	if (r)
		return bad_usage("--token-file %s: %s", token_file,
				 r == -EINVAL ? "the token must be 16 to 255 bytes" : strerror(-r));
	memsvc_token_text(secret, secret_len, token);
	explicit_bzero(secret, sizeof(secret));

	struct memsvc_client *c = memsvc_connect(host, port, 0, &r, why, sizeof(why));
	if (!c) {
		log_err("%s", why);
		return 1;
	}
	if (!strcmp(cmd, "delete")) {
		r = memsvc_delete(c, ns, token);
		if (r)
			log_err("deleting %s: %s", target, memsvc_why(c));
		else
			printf("deleted %s\n", target);
	} else {
		static struct memsvc_ns_entry e[4096];
		size_t n;
		r = memsvc_list(c, token, e, sizeof(e) / sizeof(e[0]), &n);
		if (r) {
			log_err("listing %s: %s", target, memsvc_why(c));
		} else {
			printf("%-32s %10s %10s %10s %6s %s\n", "NAMESPACE", "SIZE", "STORED",
			       "LIMIT", "EPOCH", "OWNER");
			for (size_t i = 0; i < n; i++) {
				char a[32], b[32], l[32];
				printf("%-32s %10s %10s %10s %6llu %s\n", e[i].name,
				       fmt_size(e[i].info.nr_pages * MEMSVC_PAGE, a, sizeof(a)),
				       fmt_size(e[i].info.used_pages * MEMSVC_PAGE, b, sizeof(b)),
				       fmt_size(e[i].info.limit_pages * MEMSVC_PAGE, l, sizeof(l)),
				       (unsigned long long)e[i].info.epoch,
				       e[i].owned ? "connected" : "-");
			}
		}
	}
	explicit_bzero(token, sizeof(token));
	memsvc_close(c);
	return r ? 1 : 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"listen", required_argument, NULL, 'l'},  {"rdma", required_argument, NULL, 'r'},
	    {"dir", required_argument, NULL, 'd'},     {"sync", no_argument, NULL, 's'},
	    {"max-mem", required_argument, NULL, 'm'}, {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},	       {0},
	};
	struct memsvc_server_opts o = {0};
	struct memsvc_server *s = NULL;
	char why[300] = "", host[256];
	uint16_t port;
	sigset_t sigs;
	int c, sfd, r;

	log_set_prefix("flit-memsvc");
	if (log_init_from_env())
		return bad_usage("FLIT_LOG must be debug, info, warn or err");
	if (argc > 1 && (!strcmp(argv[1], "list") || !strcmp(argv[1], "delete")))
		return command(argc, argv);
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'l':
			if (memsvc_parse_listen(optarg, host, sizeof(host), &port))
				return bad_usage("--listen %s: an address is HOST:PORT", optarg);
			o.listen = optarg;
			break;
		case 'r':
			if (memsvc_parse_listen(optarg, host, sizeof(host), &port))
				return bad_usage("--rdma %s: an address is HOST:PORT", optarg);
			o.rdma = optarg;
			break;
		case 'd':
			if (!*optarg)
				return bad_usage("--dir needs a folder");
			o.dir = optarg;
			break;
		case 's':
			o.sync = true;
			break;
		case 'm':
			if (parse_size(optarg, &o.max_mem) || o.max_mem < 4096)
				return bad_usage("--max-mem %s: not a size (try 512M or 2G)",
						 optarg);
			break;
		case 'v':
			log_set_level(LOG_DEBUG);
			break;
		case 'h':
			usage(stdout);
			return 0;
		case ':':
			return bad_usage("option %s needs a value", argv[optind - 1]);
		default:
			return bad_usage("unknown option %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return bad_usage("unexpected argument %s", argv[optind]);
	if (!o.listen)
		return bad_usage("no address to serve on: --listen HOST:PORT");
	if (o.sync && !o.dir)
		return bad_usage("--sync needs --dir (pages in memory have no disk to sync)");

	/* SIGTERM/SIGINT arrive through a signalfd the loop watches, so the
	 * service stops between two requests and exits cleanly. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
	if (sfd < 0) {
		log_err("signalfd: %s", strerror(errno));
		return 1;
	}
	r = memsvc_server_create(&o, &s, why, sizeof(why));
	if (r) {
		log_err("%s", why);
		close(sfd);
		return r == -ENODEV && o.rdma ? EXIT_NO_RDMA : 1;
	}
	r = memsvc_server_run(s, sfd);
	memsvc_server_destroy(s);
	close(sfd);
	if (r)
		return 1;
	log_info("stopped");
	return 0;
}
