// SPDX-License-Identifier: MIT
/*
 * flit: runs one guest under KVM, and moves it live to another flit.
 *
 *   flit --guest memcheck --mem 1G --vcpus 2 ws=64m rounds=16 --verify
 *   flit --incoming tcp:0.0.0.0:7000 --token-file T --verify
 *   flit --guest memcheck rounds=0 --migrate-to tcp:HOST:7000 --token-file T
 *
 * Words without a leading "--" are the guest's arguments. Exit status: the
 * guest's own status (0-63), or one of the FLIT_EXIT_* codes below.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "api/api.h"
#include "migrate/conn.h"
#include "migrate/migrate.h"
#include "migrate/policy.h"
#include "transport/transport.h"
#include "memsvc/client.h"
#include "vmm/loader.h"
#include "vmm/remote.h"
#include "vmm/vm.h"

enum {
	FLIT_EXIT_USAGE = 64,	    /* bad command line */
	FLIT_EXIT_BAD_IMAGE = 65,   /* guest image malformed */
	FLIT_EXIT_NO_IMAGE = 66,    /* guest image not found */
	FLIT_EXIT_NO_KVM = 69,	    /* hypervisor unavailable */
	FLIT_EXIT_GUEST_CRASH = 70, /* a vCPU failed */
	FLIT_EXIT_RESOURCES = 71,   /* memory or other host resources */
	FLIT_EXIT_REMOTE_MEM = 74,  /* the memory service is gone; the guest stopped */
	FLIT_EXIT_TIMEOUT = 75,
	FLIT_EXIT_MIGRATION = 76, /* migration failed (the guest ran on here) */
};

struct opts {
	uint64_t mem;
	uint64_t vcpus;
	const char *guest;
	const char *dirty;
	enum mem_backing backing;
	uint64_t timeout_s;
	bool verify;
	char args[FLIT_ARGS_MAX];
	bool mem_given, vcpus_given;
	int prealloc; /* -1: default (on for --incoming, off otherwise) */
	/* migration */
	const char *incoming;	/* destination: listen address */
	const char *migrate_to; /* source: destination address */
	const char *token_file;
	const char *api; /* control socket path */
	uint64_t migrate_after_ms;
	uint64_t finish_after_ms; /* then command the guest to verify and exit */
	struct mig_params mig;
	const char *memsvc; /* --mem-backend memsvc://... */
	uint64_t cache;
	uint64_t memsvc_retry_ms;
	bool mode_given;
};

/* Guest RAM in memsvc, if --mem-backend said so (one guest per process). */
static struct remote_mem *remote;

/* Stops the guest for good and frees it (the pager goes first, while the
 * RAM is still mapped and nothing runs). */
static void guest_destroy(struct vm *vm)
{
	if (remote) {
		vm_pause(vm);
		remote_close(remote);
		remote = NULL;
	}
	vm_destroy(vm);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: flit --guest NAME|PATH [options] [guest-arg ...]\n"
		"Runs one guest under KVM and exits with its status.\n\n"
		"  --guest NAME|PATH   hello, memcheck, memtouch, dirtyset, or an ELF file\n"
		"  --mem SIZE          guest RAM, e.g. 256M, 2G (default 256M; 4M..64G,\n"
		"                      a multiple of 2M)\n"
		"  --vcpus N           vCPUs, 1..%d (default 1)\n"
		"  --mem-backend B     anon (default), memfd, or memsvc://HOST[:PORT]/NS: RAM\n"
		"                      held by flit-memsvc, only --cache of it here\n"
		"                      (the namespace's secret is --token-file's)\n"
		"  --cache SIZE        with memsvc: resident RAM at most (default: a quarter)\n"
		"  --memsvc-timeout SEC  a lost memsvc is retried this long, then the guest\n"
		"                      stops (default 30)\n"
		"  --dirty-track M     bitmap (default) or ring\n"
		"  --verify            after the guest exits, check every memcheck page from\n"
		"                      the host side too\n"
		"  --timeout SEC       give up after SEC seconds (default: none)\n"
		"  --api PATH          serve the control API on a unix socket (flitctl;\n"
		"                      docs/api.md): status, pause, resume, migrate, ...\n"
		"                      (with --incoming: once the guest has arrived)\n"
		"  --finish-after SEC  then tell the guest to verify its memory and exit\n"
		"                      (memcheck; decimals allowed)\n\n"
		"Live migration (pre-copy over TCP; docs/stream.md):\n"
		"  --incoming tcp:ADDR:PORT  wait for a guest instead of starting one; --mem\n"
		"                      and --vcpus, if given, must match the source's\n"
		"  --migrate-to tcp:HOST:PORT  move the running guest there\n"
		"  --migrate-after SEC start the migration after SEC s (default 1)\n"
		"  --token-file FILE   shared secret, 16..256 bytes (both sides; required)\n"
		"  --mode MODE         precopy (default): rounds while the guest runs;\n"
		"                      postcopy: switch at once, pages follow on demand;\n"
		"                      hybrid: pre-copy rounds while they pay, then post-copy;\n"
		"                      memsvc (for memsvc-backed RAM): move the cache, then\n"
		"                      hand the namespace over with the vCPU state\n"
		"  --memsvc-cache HOW  memsvc: send (default): the cache goes to the\n"
		"                      destination in pre-copy rounds; writeback: it goes\n"
		"                      back to memsvc, the destination fetches what it needs\n"
		"  --policy NAME       the migration policy (docs/policies.md): precopy-default,\n"
		"                      hybrid-default, hybrid-recent, postcopy-default,\n"
		"                      postcopy-prefetch (default: the mode's *-default;\n"
		"                      a policy for one mode implies --mode)\n"
		"  --channels N        data connections, 1..16 (default 2)\n"
		"  --transport NAME    how data connections send, or with --incoming\n"
		"                      receive: uring (io_uring) or sync (plain calls);\n"
		"                      default: uring (plain calls where io_uring is off)\n"
		"  --downtime-limit MS stop iterating under this estimate (default 20)\n"
		"  --max-rounds N      at most N pre-copy rounds (default 30)\n"
		"  --bandwidth SIZE    cap, bytes per second, e.g. 100M (default: none)\n"
		"  --no-auto-converge  never throttle the vCPUs\n"
		"  --checksum-pages    CRC32C over page data too (default: over every\n"
		"                      record's metadata; TCP guards page data)\n"
		"  --net-timeout SEC   network silence that breaks a migration (default 10;\n"
		"                      both sides)\n"
		"  --recover-timeout SEC  after a break in post-copy, or between the source's\n"
		"                      go and the destination's answer, how long both sides\n"
		"                      wait to reconnect (the source tries at once, every\n"
		"                      second and on flitctl migrate-recover) before the\n"
		"                      guest is lost (default 60; 0: lost at once)\n"
		"  --mem-prealloc, --no-mem-prealloc  fault in all guest RAM at creation\n"
		"                      (default: on for --incoming given --mem and --vcpus:\n"
		"                      the VM is then built before the source connects)\n"
		"  -v, --verbose       debug logging (also FLIT_LOG=debug)\n"
		"  -h, --help          this text\n\n"
		"Guest arguments are words such as ws=64m rounds=8 (see docs/guests.md).\n"
		"Exit status: the guest's (0 = success), %d usage, %d bad image, %d image not\n"
		"found, %d KVM unusable, %d guest crashed, %d host resources, %d timeout,\n"
		"%d migration failed (the guest ran on in this process until it exited).\n"
		"The source prints the migration report as one JSON line on stdout.\n",
		FLIT_MAX_VCPUS, FLIT_EXIT_USAGE, FLIT_EXIT_BAD_IMAGE, FLIT_EXIT_NO_IMAGE,
		FLIT_EXIT_NO_KVM, FLIT_EXIT_GUEST_CRASH, FLIT_EXIT_RESOURCES, FLIT_EXIT_TIMEOUT,
		FLIT_EXIT_MIGRATION);
}

__attribute__((format(printf, 1, 2))) static int bad_usage(const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_err("%s (see flit --help)", msg);
	return FLIT_EXIT_USAGE;
}

/* "1", "0.25", "2.5": seconds as milliseconds. */
static int parse_seconds_ms(const char *s, uint64_t *ms)
{
	char *end;
	double d;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	d = strtod(s, &end);
	if (*end || d < 0 || d > 86400)
		return -EINVAL;
	*ms = (uint64_t)(d * 1000.0 + 0.5);
	return 0;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
	    {"guest", required_argument, NULL, 'g'},
	    {"mem", required_argument, NULL, 'm'},
	    {"vcpus", required_argument, NULL, 'c'},
	    {"mem-backend", required_argument, NULL, 'b'},
	    {"dirty-track", required_argument, NULL, 'd'},
	    {"verify", no_argument, NULL, 'V'},
	    {"timeout", required_argument, NULL, 't'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {"incoming", required_argument, NULL, 'I'},
	    {"migrate-to", required_argument, NULL, 'M'},
	    {"migrate-after", required_argument, NULL, 'A'},
	    {"finish-after", required_argument, NULL, 'F'},
	    {"token-file", required_argument, NULL, 'T'},
	    {"channels", required_argument, NULL, 'C'},
	    {"transport", required_argument, NULL, 'X'},
	    {"mode", required_argument, NULL, 'O'},
	    {"downtime-limit", required_argument, NULL, 'D'},
	    {"max-rounds", required_argument, NULL, 'R'},
	    {"bandwidth", required_argument, NULL, 'B'},
	    {"no-auto-converge", no_argument, NULL, 'N'},
	    {"checksum-pages", no_argument, NULL, 'K'},
	    {"mem-prealloc", no_argument, NULL, 'P'},
	    {"api", required_argument, NULL, 'S'},
	    {"no-mem-prealloc", no_argument, NULL, 'Q'},
	    {"cache", required_argument, NULL, 'Z'},
	    {"memsvc-timeout", required_argument, NULL, 'W'},
	    {"memsvc-cache", required_argument, NULL, 'H'},
	    {"net-timeout", required_argument, NULL, 'n'},
	    {"recover-timeout", required_argument, NULL, 'r'},
	    {"policy", required_argument, NULL, 'y'},
	    {0},
	};
	uint64_t v;
	int c;
	size_t alen = 0;

	*o = (struct opts){.mem = 256 * MiB,
			   .vcpus = 1,
			   .dirty = "bitmap",
			   .migrate_after_ms = 1000,
			   .prealloc = -1};
	mig_params_default(&o->mig);
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'g':
			o->guest = optarg;
			break;
		case 'm':
			if (parse_size(optarg, &o->mem))
				return bad_usage("--mem %s: not a size (try 256M or 2G)", optarg);
			if (o->mem < 4 * MiB)
				return bad_usage("--mem %s: at least 4M is needed", optarg);
			if (o->mem % (2 * MiB))
				return bad_usage("--mem %s: must be a multiple of 2M", optarg);
			if (o->mem > FLIT_MAX_MEM_GIB * GiB)
				return bad_usage("--mem %s: at most 64G is supported", optarg);
			o->mem_given = true;
			break;
		case 'c':
			if (parse_uint(optarg, 1, FLIT_MAX_VCPUS, &o->vcpus))
				return bad_usage("--vcpus %s: must be a number from 1 to 32",
						 optarg);
			o->vcpus_given = true;
			break;
		case 'I':
		case 'M': {
			char host[256];
			uint16_t port;
			if (mig_parse_addr(optarg, host, sizeof(host), &port))
				return bad_usage("%s: an address is tcp:HOST:PORT", optarg);
			if (c == 'I')
				o->incoming = optarg;
			else
				o->migrate_to = o->mig.addr = optarg;
			break;
		}
		case 'A':
		case 'F':
			if (parse_seconds_ms(optarg,
					     c == 'A' ? &o->migrate_after_ms : &o->finish_after_ms))
				return bad_usage("%s: seconds, e.g. 1 or 0.5", optarg);
			break;
		case 'T':
			o->token_file = optarg;
			break;
		case 'C':
			if (parse_uint(optarg, 1, MIG_MAX_CHANNELS, &v))
				return bad_usage("--channels %s: a number from 1 to 16", optarg);
			o->mig.channels = (unsigned)v;
			break;
		case 'O':
			o->mode_given = true;
			if (mig_mode_parse(optarg) < 0)
				return bad_usage("--mode %s: precopy, postcopy, hybrid or memsvc",
						 optarg);
			o->mig.mode = (enum mig_mode)mig_mode_parse(optarg);
			break;
		case 'K':
			o->mig.checksum_pages = true;
			break;
		case 'X':
			o->mig.transport = transport_find(optarg);
			if (!o->mig.transport)
				return bad_usage("--transport %s: one of %s", optarg,
						 transport_names());
			break;
		case 'D':
			if (parse_uint(optarg, 1, 60000, &v))
				return bad_usage("--downtime-limit %s: milliseconds, 1 to 60000",
						 optarg);
			o->mig.downtime_limit_ms = (uint32_t)v;
			break;
		case 'R':
			if (parse_uint(optarg, 1, 10000, &v))
				return bad_usage("--max-rounds %s: 1 to 10000", optarg);
			o->mig.max_rounds = (uint32_t)v;
			break;
		case 'B':
			if (parse_size(optarg, &v) || v < 1024 * 1024)
				return bad_usage("--bandwidth %s: bytes per second, at least 1M",
						 optarg);
			o->mig.bandwidth_limit = v;
			break;
		case 'N':
			o->mig.auto_converge = false;
			break;
		case 'S':
			o->api = optarg;
			break;
		case 'P':
		case 'Q':
			o->prealloc = c == 'P' ? 1 : 0;
			break;
		case 'b':
			if (!strncmp(optarg, "memsvc://", 9)) {
				char host[256], ns[MEMSVC_NAME_MAX + 1], why[160];
				uint16_t port;
				if (memsvc_parse_url(optarg, host, sizeof(host), &port, ns,
						     sizeof(ns), why, sizeof(why)))
					return bad_usage("--mem-backend %s", why);
				o->memsvc = optarg;
				o->backing = MEM_ANON;
			} else if (mem_backing_parse(optarg, &o->backing)) {
				return bad_usage("--mem-backend %s: anon, memfd or "
						 "memsvc://HOST[:PORT]/NAMESPACE",
						 optarg);
			}
			break;
		case 'H': {
			int how = mig_memsvc_cache_parse(optarg);
			if (how < 0)
				return bad_usage("--memsvc-cache %s: send or writeback", optarg);
			o->mig.memsvc_cache = (enum mig_memsvc_cache)how;
			break;
		}
		case 'n':
			if (parse_seconds_ms(optarg, &v) || v < 100 || v > 3600000)
				return bad_usage("--net-timeout %s: seconds, 0.1 to 3600", optarg);
			o->mig.timeout_ms = (int)v;
			break;
		case 'r':
			if (parse_seconds_ms(optarg, &v) || v > 86400000)
				return bad_usage("--recover-timeout %s: seconds, 0 to 86400",
						 optarg);
			o->mig.recover_ms = (int)v;
			break;
		case 'y':
			if (!(o->mig.policy = mig_policy_by_name(optarg)))
				return bad_usage("--policy %s: one of %s", optarg,
						 mig_policy_names());
			break;
		case 'W':
			if (parse_seconds_ms(optarg, &o->memsvc_retry_ms) || !o->memsvc_retry_ms)
				return bad_usage("--memsvc-timeout %s: seconds, e.g. 30", optarg);
			break;
		case 'Z':
			if (parse_size(optarg, &o->cache) || o->cache < MiB)
				return bad_usage("--cache %s: a size of at least 1M", optarg);
			break;
		case 'd':
			if (strcmp(optarg, "bitmap") && strcmp(optarg, "ring"))
				return bad_usage("--dirty-track %s: must be bitmap or ring",
						 optarg);
			o->dirty = optarg;
			break;
		case 'V':
			o->verify = true;
			break;
		case 't':
			if (parse_uint(optarg, 1, 86400, &o->timeout_s))
				return bad_usage("--timeout %s: seconds from 1 to 86400", optarg);
			break;
		case 'v':
			log_set_level(LOG_DEBUG);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case ':':
			return bad_usage("option %s needs a value", argv[optind - 1]);
		default:
			return bad_usage("unknown option %s", argv[optind - 1]);
		}
	}
	if (o->incoming && (o->guest || o->migrate_to))
		return bad_usage("%s", "--incoming takes its guest from the source: no --guest, "
				       "no --migrate-to");
	if (!o->guest && !o->incoming)
		return bad_usage("%s", "no guest given: --guest NAME|PATH");
	if (o->api && o->migrate_to)
		return bad_usage("%s", "--api and --migrate-to both start migrations: use "
				       "one (flitctl migrate, or --migrate-to)");
	if ((o->incoming || o->migrate_to) && !o->token_file)
		return bad_usage("%s", "a migration needs --token-file (the same on both sides)");
	if (o->memsvc && !o->token_file)
		return bad_usage("%s", "--mem-backend memsvc needs --token-file (the namespace's "
				       "secret)");
	if (o->cache && !o->memsvc && !o->incoming)
		return bad_usage("%s", "--cache is for --mem-backend memsvc://... (or --incoming)");
	if (o->memsvc && o->prealloc == 1)
		return bad_usage("%s", "--mem-prealloc and memsvc-backed RAM do not mix: the "
				       "cache fills on demand");
	if (o->memsvc && !o->mode_given)
		o->mig.mode = MIG_MODE_MEMSVC;
	/* A policy made for one mode implies it. */
	const struct mig_policy_ops *pol = o->mig.policy;
	if (pol && !o->mode_given && !(pol->modes & (pol->modes - 1)))
		o->mig.mode = (enum mig_mode)__builtin_ctz(pol->modes);
	if (pol && !(pol->modes & 1u << o->mig.mode))
		return bad_usage("--policy %s is not for mode %s", pol->name,
				 mig_mode_name(o->mig.mode));
	if (o->memsvc && !o->incoming && o->mig.mode != MIG_MODE_MEMSVC)
		return bad_usage("%s",
				 "a guest with memsvc-backed RAM migrates with --mode memsvc");
	if (!o->memsvc && !o->incoming && o->mig.mode == MIG_MODE_MEMSVC)
		return bad_usage("%s", "--mode memsvc needs --mem-backend memsvc://...");
	if (o->token_file) {
		int r = mig_read_token(o->token_file, o->mig.token, &o->mig.token_len);
		if (r == -EINVAL)
			return bad_usage("--token-file %s: the token must be 16 to 255 bytes "
					 "(up to the first newline)",
					 o->token_file);
		if (r)
			return bad_usage("--token-file %s: %s", o->token_file, strerror(-r));
	}
	for (int i = optind; i < argc; i++) {
		if (!strncmp(argv[i], "--", 2))
			return bad_usage("unknown option %s", argv[i]);
		size_t n = strlen(argv[i]);
		if (alen + n + 2 > sizeof(o->args))
			return bad_usage("%s", "guest arguments too long (1023 bytes at most)");
		if (alen)
			o->args[alen++] = ' ';
		memcpy(o->args + alen, argv[i], n + 1);
		alen += n;
	}
	uint64_t host = host_mem_total();
	if (host && o->mem > host) {
		char a[32], b[32];
		log_err("--mem %s is more than this machine's memory (%s)",
			fmt_size(o->mem, a, sizeof(a)), fmt_size(host, b, sizeof(b)));
		return FLIT_EXIT_USAGE;
	}
	return 0;
}

/* A name without '/' is a built-in guest: FLIT_GUEST_DIR, then the guests/
 * folder next to this executable. */
static int resolve_guest(const char *name, char *out, size_t len)
{
	char exe[PATH_MAX];
	const char *dir = getenv("FLIT_GUEST_DIR");
	ssize_t n;

	if (strchr(name, '/')) {
		snprintf(out, len, "%s", name);
		return access(out, R_OK) ? -errno : 0;
	}
	if (dir && *dir) {
		snprintf(out, len, "%s/%s.elf", dir, name);
		if (!access(out, R_OK))
			return 0;
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = 0;
		snprintf(out, len, "%s/guests/%s.elf", dirname(exe), name);
		if (!access(out, R_OK))
			return 0;
	}
	return -ENOENT;
}

static int check_image(const char *path, uint64_t mem)
{
	struct image_info info;
	char err[200];
	void *img;
	size_t size;
	int r = image_read_file(path, 64 * MiB, &img, &size);

	if (r) {
		log_err("guest image %s: %s", path,
			r == -EFBIG    ? "larger than 64 MiB"
			: r == -EISDIR ? "is a directory"
				       : strerror(-r));
		return r == -EFBIG ? FLIT_EXIT_BAD_IMAGE : FLIT_EXIT_NO_IMAGE;
	}
	r = image_check_elf(img, size, FLIT_IMAGE_GPA, mem, &info, err, sizeof(err));
	free(img);
	if (r) {
		log_err("guest image %s: %s", path, err);
		return FLIT_EXIT_BAD_IMAGE;
	}
	return 0;
}

static int exit_code_for(int err)
{
	switch (err) {
	case -ENOENT:
	case -EACCES:
	case -ENODEV:
	case -ENXIO:
	case -EPERM:
		return FLIT_EXIT_NO_KVM;
	case -ENOMEM:
	case -EMFILE:
	case -ENOSPC:
		return FLIT_EXIT_RESOURCES;
	default:
		return FLIT_EXIT_RESOURCES;
	}
}

/* Runs the guest until it exits (or fails, or the timeout passes), telling it
 * to verify and exit after --finish-after; then the optional host check.
 * Returns the process exit status. Destroys the VM. */
enum { WAIT_DONE, WAIT_MIGRATED, WAIT_QUIT, WAIT_REMOTE_LOST, WAIT_LOST };

/* vm_wait, but also ending when the API says the guest left or to quit. */
static int wait_guest(struct vm *vm, struct api_server *api, int timeout_ms, struct vm_result *res)
{
	uint64_t end = timeout_ms < 0 ? UINT64_MAX : now_ns() + (uint64_t)timeout_ms * 1000000ULL;

	if (!api && !remote) {
		vm_wait(vm, timeout_ms, res);
		return WAIT_DONE;
	}
	for (;;) {
		uint64_t now = now_ns();
		int slice = now >= end ? 0 : (int)MIN((end - now) / 1000000ULL, 200);
		vm_wait(vm, slice, res);
		if (api && api_migrated(api))
			return WAIT_MIGRATED;
		if (api && api_lost(api))
			return WAIT_LOST;
		if (api && api_quit_requested(api))
			return WAIT_QUIT;
		if (remote && remote_failed(remote, NULL, 0))
			return WAIT_REMOTE_LOST;
		if (!res->timed_out || now_ns() >= end)
			return WAIT_DONE;
	}
}

static int run_to_end(struct vm *vm, const struct opts *o, uint64_t t0, struct api_server *api)
{
	struct vm_result res;
	int timeout = o->timeout_s ? (int)(o->timeout_s * 1000) : -1, r, status, w;

	if (o->finish_after_ms) {
		w = wait_guest(vm, api, (int)o->finish_after_ms, &res);
		if (w == WAIT_DONE && res.timed_out) {
			log_info("telling the guest to verify its memory and exit");
			testdev_command(&vm->testdev, -1, FLIT_CMD_VERIFY_EXIT);
		}
	}
	w = wait_guest(vm, api, timeout, &res);
	if (w == WAIT_MIGRATED || w == WAIT_LOST)
		api_wait_final_read(api, 3000); /* let flitctl read the report */
	api_stop(api);				/* waits for a migration still running */
	if (w == WAIT_REMOTE_LOST) {
		char why[200];
		remote_failed(remote, why, sizeof(why));
		/* The vCPUs may wait on pages that cannot come: no pause. */
		log_err("guest RAM is out of reach (%s): stopping; every page written back is "
			"in memsvc",
			why);
		_exit(FLIT_EXIT_REMOTE_MEM);
	}
	if (remote) {
		struct pager_stats ps;
		remote_stats(remote, &ps);
		log_info("remote memory: %llu pages fetched (%llu never written), %llu evicted, "
			 "%llu written back, %llu resident; fault to page p50 %llu us, p99 %llu "
			 "us",
			 (unsigned long long)ps.fetched, (unsigned long long)ps.fetched_zero,
			 (unsigned long long)ps.evicted, (unsigned long long)ps.written,
			 (unsigned long long)ps.resident, (unsigned long long)ps.fetch_p50_us,
			 (unsigned long long)ps.fetch_p99_us);
	}
	if (w == WAIT_LOST) {
		log_err("the guest was lost: post-copy broke after the switch and was not "
			"recovered; this copy is stale");
		guest_destroy(vm);
		return FLIT_EXIT_MIGRATION;
	}
	if (w == WAIT_MIGRATED || (api && w == WAIT_QUIT)) {
		log_info("%s", w == WAIT_MIGRATED ? "the guest runs at the destination now; "
						    "leaving"
						  : "quitting as asked");
		guest_destroy(vm);
		return 0;
	}
	vm_pause(vm);
	if (res.failed || res.timed_out) {
		log_err("%s", res.reason);
		guest_destroy(vm);
		return res.failed ? FLIT_EXIT_GUEST_CRASH : FLIT_EXIT_TIMEOUT;
	}
	status = (int)(res.exit_status > 63 ? 63 : res.exit_status);
	log_info("guest exited with status %u after %.3f s", res.exit_status,
		 (double)(now_ns() - t0) / 1e9);
	uint64_t stall = vm_memcheck_max_stall_us(vm);
	if (stall)
		log_info("the guest's longest stall between two rounds: %.2f ms (host wall time, "
			 "as the guest saw it)",
			 (double)stall / 1e3);
	if (o->verify) {
		uint64_t checked = 0, bad = 0;
		r = vm_verify_memcheck(vm, &checked, &bad);
		if (r) {
			log_err("host check: %s",
				r == -ENODATA ? "the guest published no memcheck table"
					      : "the guest's memcheck table is inconsistent");
			status = status ? status : 1;
		} else {
			log_info("host check: %llu pages verified, %llu bad",
				 (unsigned long long)checked, (unsigned long long)bad);
			if (bad && !status)
				status = 1;
		}
	}
	guest_destroy(vm);
	return status;
}

static void report_summary(const struct mig_report *rep, bool source)
{
	if (strcmp(rep->status, "completed")) {
		log_err("migration %s: %s", rep->status, rep->error);
		return;
	}
	if (source)
		log_info("migration completed: %.1f ms total, %.2f ms downtime, %u rounds, "
			 "%.1f MB sent at %.0f Mbit/s",
			 rep->total_ms, rep->downtime_ms, rep->rounds, (double)rep->bytes / 1e6,
			 rep->throughput_mbps);
	else
		log_info("migration received: %.1f MB in %.1f ms, %u rounds, state restored in "
			 "%.2f ms; the guest runs here now",
			 (double)rep->bytes / 1e6, rep->total_ms, rep->rounds, rep->restore_ms);
}

static int run_incoming(const struct opts *o)
{
	struct mig_dest_params dp;
	struct mig_report rep;
	struct vm *vm = NULL;

	mig_dest_params_default(&dp);
	dp.addr = o->incoming;
	memcpy(dp.token, o->mig.token, o->mig.token_len);
	dp.token_len = o->mig.token_len;
	dp.mem_size = o->mem_given ? o->mem : 0;
	dp.nr_vcpus = o->vcpus_given ? (uint32_t)o->vcpus : 0;
	dp.backing = o->backing;
	dp.dirty_track = o->dirty;
	dp.accept_timeout_ms = o->timeout_s ? (int)(o->timeout_s * 1000) : -1;
	dp.timeout_ms = o->mig.timeout_ms;
	dp.recover_ms = o->mig.recover_ms;
	dp.transport = o->mig.transport;
	/* Preallocation pays off when it happens before the source connects,
	 * which needs the layout up front: on by default with --mem and --vcpus. */
	dp.prealloc =
	    o->prealloc == 1 || (o->prealloc < 0 && o->mem_given && o->vcpus_given && !o->memsvc);
	/* A guest whose RAM is in memsvc: its namespace is taken over here. */
	dp.memsvc_url = o->memsvc;
	dp.cache_bytes = o->cache;
	dp.remote_out = &remote;
	int r = mig_dest_run(&dp, &vm, &rep);
	report_summary(&rep, false);
	if (r)
		return r == -ENODEV || r == -ENOENT || r == -EACCES ? FLIT_EXIT_NO_KVM
								    : FLIT_EXIT_MIGRATION;
	/* The API comes up once the guest has arrived: it can then be
	 * paused, watched, or migrated on. */
	struct api_server *api = NULL;
	static struct mig_params onward; /* the API keeps a pointer to it */
	onward = o->mig;
	onward.remote = remote;
	if (remote && onward.mode != MIG_MODE_MEMSVC)
		onward.mode = MIG_MODE_MEMSVC; /* the only way such a guest moves on */
	if (o->api) {
		r = api_start(o->api, vm, &onward, &api);
		if (r) {
			log_err("the guest runs here, but the API could not start; stopping it");
			guest_destroy(vm);
			return FLIT_EXIT_RESOURCES;
		}
		log_info("API on %s", o->api);
	}
	return run_to_end(vm, o, now_ns(), api);
}

int main(int argc, char **argv)
{
	struct opts o;
	struct vm *vm = NULL;
	char path[PATH_MAX];
	int r;

	log_set_prefix("flit");
	if (log_init_from_env())
		log_warn("FLIT_LOG must be err, warn, info or debug; using info");
	r = parse_opts(argc, argv, &o);
	if (r)
		return r;
	if (o.incoming)
		return run_incoming(&o);
	if (resolve_guest(o.guest, path, sizeof(path))) {
		log_err("guest '%s' not found%s", o.guest,
			strchr(o.guest, '/') ? ""
					     : " (built-in guests: hello, memcheck, memtouch, "
					       "dirtyset)");
		return FLIT_EXIT_NO_IMAGE;
	}

	/* A bad image is reported before any VM exists (and on hosts without KVM). */
	r = check_image(path, o.mem);
	if (r)
		return r;

	struct vm_config cfg = {.mem_size = o.mem,
				.nr_vcpus = (uint32_t)o.vcpus,
				.backing = o.backing,
				.dirty_track = o.dirty,
				.prealloc = o.prealloc == 1};
	r = vm_create(&cfg, &vm);
	if (r)
		return exit_code_for(r);
	r = vm_load_guest(vm, path, o.args);
	if (r) {
		guest_destroy(vm);
		if (r == -ENOEXEC)
			return FLIT_EXIT_BAD_IMAGE;
		return r == -ENOENT || r == -EISDIR || r == -EACCES ? FLIT_EXIT_NO_IMAGE
								    : FLIT_EXIT_RESOURCES;
	}
	if (o.memsvc) {
		struct remote_params rp = {.url = o.memsvc,
					   .token = o.mig.token,
					   .token_len = o.mig.token_len,
					   .cache_bytes = o.cache,
					   .retry_ms = (int)o.memsvc_retry_ms};
		r = remote_open(&remote, vm, &rp);
		if (r) {
			guest_destroy(vm);
			return FLIT_EXIT_REMOTE_MEM;
		}
		o.mig.remote = remote;
	}
	char sz[32];
	log_info("guest %s: %s RAM (%s), %u vCPU%s, dirty tracking %s", o.guest,
		 fmt_size(o.mem, sz, sizeof(sz)), o.memsvc ? "memsvc" : mem_backing_name(o.backing),
		 (unsigned)o.vcpus, o.vcpus > 1 ? "s" : "", o.dirty);
	uint64_t t0 = now_ns();
	r = vm_start(vm);
	if (r) {
		log_err("starting the vCPUs: %s", strerror(-r));
		guest_destroy(vm);
		return FLIT_EXIT_RESOURCES;
	}
	if (!o.migrate_to) {
		struct api_server *api = NULL;
		if (o.api) {
			r = api_start(o.api, vm, &o.mig, &api);
			if (r) {
				guest_destroy(vm);
				return FLIT_EXIT_RESOURCES;
			}
			log_info("API on %s", o.api);
		}
		return run_to_end(vm, &o, t0, api);
	}

	struct vm_result res;
	vm_wait(vm, (int)o.migrate_after_ms, &res);
	if (!res.timed_out) {
		log_err("the guest ended before the migration could start");
		vm_pause(vm);
		guest_destroy(vm);
		return res.failed ? FLIT_EXIT_GUEST_CRASH : FLIT_EXIT_MIGRATION;
	}
	struct mig_report rep;
	log_info("migrating to %s (%u channels)", o.migrate_to, o.mig.channels);
	r = mig_source_run(vm, &o.mig, &rep);
	mig_report_json(&rep, stdout);
	report_summary(&rep, true);
	if (!r) {
		guest_destroy(vm); /* the guest lives on at the destination */
		return 0;
	}
	if (!strcmp(rep.status, "lost") || !strcmp(rep.status, "unconfirmed")) {
		/* Post-copy broke after the switch, or the destination was
		 * told to run the guest: this copy must never run again. */
		guest_destroy(vm);
		return FLIT_EXIT_MIGRATION;
	}
	/* The guest never left: it runs on here. */
	int status = run_to_end(vm, &o, t0, NULL);
	return status ? status : FLIT_EXIT_MIGRATION;
}
