// SPDX-License-Identifier: MIT
#include "store.h"

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/bitmap.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "common/util.h"

/* DIR/NAME.meta, little-endian, replaced whole (temp file + rename). */
#define META_MAGIC   "FLITMSNS"
#define META_VERSION 1u

struct meta_disk {
	char magic[8];
	uint32_t version;
	uint32_t page_size;
	char name[64]; /* NUL-padded */
	uint8_t token_hash[32];
	uint64_t nr_pages;
	uint64_t limit_pages;
	uint64_t epoch;
	uint32_t reserved;
	uint32_t crc; /* CRC-32C of every byte before it */
};
_Static_assert(sizeof(struct meta_disk) == 144, "meta layout");
_Static_assert(MEMSVC_NAME_MAX < sizeof(((struct meta_disk *)0)->name), "name fits");

__attribute__((format(printf, 3, 4))) static void say(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
}

static void token_hash(const void *token, size_t len, uint8_t out[32])
{
	unsigned outlen = 32;

	if (!EVP_Digest(token, len, out, &outlen, EVP_sha256(), NULL))
		memset(out, 0, 32); /* matches no real token's hash */
}

bool ms_ns_token_ok(const struct ms_ns *ns, const void *token, size_t token_len)
{
	uint8_t h[32];

	token_hash(token, token_len, h);
	return CRYPTO_memcmp(h, ns->token_hash, sizeof(h)) == 0;
}

struct ms_ns *ms_ns_find(struct ms_store *st, const char *name, size_t len)
{
	for (struct ms_ns *ns = st->ns; ns; ns = ns->next)
		if (!ns->deleted && strlen(ns->name) == len && !memcmp(ns->name, name, len))
			return ns;
	return NULL;
}

/* Unmaps and closes what ns holds (the entry stays). */
static void ns_release(struct ms_ns *ns)
{
	if (ns->pages && ns->pages != MAP_FAILED)
		munmap(ns->pages, ns->nr_pages * MEMSVC_PAGE);
	if (ns->present_fd >= 0) {
		if (ns->present && ns->present != MAP_FAILED)
			munmap(ns->present, ns->present_bytes);
		close(ns->present_fd);
	} else {
		free(ns->present);
	}
	if (ns->data_fd >= 0)
		close(ns->data_fd);
	ns->pages = NULL;
	ns->present = NULL;
	ns->data_fd = ns->present_fd = -1;
}

static void ns_free(struct ms_ns *ns)
{
	if (!ns)
		return;
	ns_release(ns);
	free(ns);
}

static struct ms_ns *ns_alloc(void)
{
	struct ms_ns *ns = calloc(1, sizeof(*ns));

	if (ns)
		ns->data_fd = ns->present_fd = -1;
	return ns;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Writes NAME.meta atomically: a temp file, fsync, rename, fsync of the
 * folder, so a crash leaves the old or the new metadata, never a mix. */
static int meta_save(struct ms_store *st, const struct ms_ns *ns, char *why, size_t whylen)
{
	struct meta_disk m;
	char tmp[MEMSVC_NAME_MAX + 16], final[MEMSVC_NAME_MAX + 16];
	int fd, r;

	memset(&m, 0, sizeof(m));
	memcpy(m.magic, META_MAGIC, 8);
	m.version = htole32(META_VERSION);
	m.page_size = htole32(MEMSVC_PAGE);
	memcpy(m.name, ns->name, strlen(ns->name));
	memcpy(m.token_hash, ns->token_hash, 32);
	m.nr_pages = htole64(ns->nr_pages);
	m.limit_pages = htole64(ns->limit_pages);
	m.epoch = htole64(ns->epoch);
	m.crc = htole32(crc32c(0, &m, offsetof(struct meta_disk, crc)));
	snprintf(tmp, sizeof(tmp), ".%s.meta.tmp", ns->name);
	snprintf(final, sizeof(final), "%s.meta", ns->name);
	fd = openat(st->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	r = write_all(fd, &m, sizeof(m));
	if (!r && fsync(fd))
		r = -errno;
	close(fd);
	if (!r && renameat(st->dir_fd, tmp, st->dir_fd, final))
		r = -errno;
	if (!r && fsync(st->dir_fd))
		r = -errno;
	if (!r)
		return 0;
	unlinkat(st->dir_fd, tmp, 0);
fail:
	say(why, whylen, "saving %s/%s: %s", st->dir, final, strerror(-r));
	return -EIO;
}

/* Maps (or creates, with create) NAME.pages and NAME.present. */
static int ns_map_files(struct ms_store *st, struct ms_ns *ns, bool create, char *why,
			size_t whylen)
{
	char path[MEMSVC_NAME_MAX + 16];
	const char *sfx[2] = {"pages", "present"};
	uint64_t want[2] = {ns->nr_pages * MEMSVC_PAGE, ns->present_bytes};
	int fds[2] = {-1, -1}, r = 0;

	for (int i = 0; i < 2; i++) {
		struct stat sb;
		snprintf(path, sizeof(path), "%s.%s", ns->name, sfx[i]);
		fds[i] = openat(st->dir_fd, path,
				O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_TRUNC : 0), 0600);
		if (fds[i] < 0) {
			r = -errno;
			say(why, whylen, "%s/%s: %s", st->dir, path, strerror(errno));
			goto fail;
		}
		if (create && (ftruncate(fds[i], (off_t)want[i]) || fsync(fds[i]))) {
			r = -errno;
			say(why, whylen, "%s/%s: %s", st->dir, path, strerror(errno));
			goto fail;
		}
		if (fstat(fds[i], &sb) || (uint64_t)sb.st_size != want[i]) {
			r = -EIO;
			say(why, whylen, "%s/%s: %llu bytes, %llu expected for %llu pages", st->dir,
			    path, (unsigned long long)sb.st_size, (unsigned long long)want[i],
			    (unsigned long long)ns->nr_pages);
			goto fail;
		}
	}
	ns->data_fd = fds[0];
	ns->present_fd = fds[1];
	ns->pages = mmap(NULL, want[0], PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
	ns->present = mmap(NULL, want[1], PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
	if (ns->pages == MAP_FAILED || ns->present == MAP_FAILED) {
		say(why, whylen, "mapping %s/%s.pages: %s", st->dir, ns->name, strerror(errno));
		return -ENOMEM; /* ns_free unmaps what was mapped */
	}
	return 0;
fail:
	for (int i = 0; i < 2; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return r;
}

static int ns_map_memory(struct ms_ns *ns, char *why, size_t whylen)
{
	ns->pages = mmap(NULL, ns->nr_pages * MEMSVC_PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	ns->present = calloc(1, ns->present_bytes);
	if (ns->pages == MAP_FAILED || !ns->present) {
		say(why, whylen, "no memory for namespace %s (%llu pages)", ns->name,
		    (unsigned long long)ns->nr_pages);
		return -ENOMEM;
	}
	return 0;
}

static void ns_unlink_files(struct ms_store *st, const char *name)
{
	char path[MEMSVC_NAME_MAX + 16];

	snprintf(path, sizeof(path), "%s.pages", name);
	unlinkat(st->dir_fd, path, 0);
	snprintf(path, sizeof(path), "%s.present", name);
	unlinkat(st->dir_fd, path, 0);
}

int ms_ns_delete(struct ms_store *st, struct ms_ns *ns, char *why, size_t whylen)
{
	if (st->dir) {
		char path[MEMSVC_NAME_MAX + 16];
		snprintf(path, sizeof(path), "%s.meta", ns->name);
		if (unlinkat(st->dir_fd, path, 0) && errno != ENOENT) {
			say(why, whylen, "deleting %s/%s: %s", st->dir, path, strerror(errno));
			return -EIO;
		}
		if (st->sync)
			fsync(st->dir_fd);
		ns_unlink_files(st, ns->name);
	}
	ns_release(ns);
	ns->deleted = true;
	ns->used_pages = 0;
	st->nr_ns--;
	st->sum_limits -= ns->limit_pages;
	return 0;
}

int ms_ns_create(struct ms_store *st, const char *name, const void *token, size_t token_len,
		 uint64_t nr_pages, uint64_t limit_pages, char *why, size_t whylen)
{
	struct ms_ns *ns;
	char a[32], b[32];
	int r;

	if (!memsvc_name_valid(name, strlen(name))) {
		say(why, whylen,
		    "bad namespace name '%.64s': 1 to %u of A-Z a-z 0-9 . _ -, not "
		    "starting with '.'",
		    name, MEMSVC_NAME_MAX);
		return -EINVAL;
	}
	if (token_len == 0 || token_len > MEMSVC_TOKEN_MAX) {
		say(why, whylen, "the token must be 1 to %u bytes", MEMSVC_TOKEN_MAX);
		return -EINVAL;
	}
	if (nr_pages == 0 || nr_pages > MEMSVC_MAX_NS_PAGES) {
		say(why, whylen, "namespace %s: %llu pages; 1 to %llu are possible", name,
		    (unsigned long long)nr_pages, MEMSVC_MAX_NS_PAGES);
		return -EINVAL;
	}
	if (ms_ns_find(st, name, strlen(name))) {
		say(why, whylen, "namespace %s exists", name);
		return -EEXIST;
	}
	if (limit_pages == 0 || limit_pages > nr_pages)
		limit_pages = nr_pages;
	if (st->max_pages && st->sum_limits + limit_pages > st->max_pages) {
		say(why, whylen,
		    "no room for namespace %s: its limit %s plus the %s promised to %u "
		    "namespaces is over --max-mem %s",
		    name, fmt_size(limit_pages * MEMSVC_PAGE, a, sizeof(a)),
		    fmt_size(st->sum_limits * MEMSVC_PAGE, b, sizeof(b)), st->nr_ns,
		    fmt_size(st->max_pages * MEMSVC_PAGE, (char[32]){0}, 32));
		return -ENOSPC;
	}
	ns = ns_alloc();
	if (!ns) {
		say(why, whylen, "out of memory");
		return -ENOMEM;
	}
	snprintf(ns->name, sizeof(ns->name), "%s", name);
	token_hash(token, token_len, ns->token_hash);
	ns->nr_pages = nr_pages;
	ns->limit_pages = limit_pages;
	ns->present_bytes = BITMAP_WORDS(nr_pages) * sizeof(uint64_t);
	if (st->dir) {
		r = ns_map_files(st, ns, true, why, whylen);
		if (!r)
			r = meta_save(st, ns, why, whylen);
		if (r) {
			ns_free(ns);
			ns_unlink_files(st, name);
			return r == -ENOMEM ? r : -EIO;
		}
	} else {
		r = ns_map_memory(ns, why, whylen);
		if (r) {
			ns_free(ns);
			return r;
		}
	}
	ns->next = st->ns;
	st->ns = ns;
	st->nr_ns++;
	st->sum_limits += limit_pages;
	log_info("namespace %s created: %llu pages, limit %llu", name, (unsigned long long)nr_pages,
		 (unsigned long long)limit_pages);
	return 0;
}

int ms_ns_set_epoch(struct ms_store *st, struct ms_ns *ns, uint64_t epoch, char *why, size_t whylen)
{
	uint64_t old = ns->epoch;

	ns->epoch = epoch;
	if (st->dir && meta_save(st, ns, why, whylen)) {
		ns->epoch = old;
		return -EIO;
	}
	return 0;
}

/* The pages of a batch not stored yet (a page twice in it counts once):
 * checked before anything is stored, so a batch over the limit stores
 * nothing. */
static int limit_ok(const struct ms_ns *ns, const uint64_t *gfn, uint32_t n, char *why,
		    size_t whylen)
{
	uint64_t fresh = 0;

	for (uint32_t i = 0; i < n; i++) {
		if (ms_ns_present(ns, gfn[i]))
			continue;
		bool dup = false;
		for (uint32_t j = 0; j < i && !dup; j++)
			dup = gfn[j] == gfn[i];
		fresh += !dup;
	}
	if (ns->used_pages + fresh > ns->limit_pages) {
		say(why, whylen, "namespace %s is full: %llu pages (%llu MiB) limit", ns->name,
		    (unsigned long long)ns->limit_pages,
		    (unsigned long long)(ns->limit_pages * MEMSVC_PAGE / MiB));
		return -ENOSPC;
	}
	return 0;
}

static void mark_present(struct ms_ns *ns, uint64_t gfn)
{
	if (ms_ns_present(ns, gfn))
		return;
	/* After the data: a kill between the two leaves the page unwritten,
	 * never marked with old contents. */
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	bitmap_set(ns->present, gfn);
	ns->used_pages++;
}

static int sync_ns(struct ms_store *st, struct ms_ns *ns, char *why, size_t whylen)
{
	if (st->sync && ns->data_fd >= 0 && (fdatasync(ns->data_fd) || fdatasync(ns->present_fd))) {
		say(why, whylen, "namespace %s: syncing to %s: %s", ns->name, st->dir,
		    strerror(errno));
		return -EIO;
	}
	return 0;
}

int ms_ns_write(struct ms_store *st, struct ms_ns *ns, const uint64_t *gfn, uint32_t n,
		const uint8_t *src, char *why, size_t whylen)
{
	int r = limit_ok(ns, gfn, n, why, whylen);

	if (r)
		return r;
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *p = src + (size_t)i * MEMSVC_PAGE;
		/* A first write of zeros needs no copy: the region already
		 * reads as zero, and skipping it allocates nothing. */
		if (ms_ns_present(ns, gfn[i]) || !page_is_zero(p))
			memcpy(ns->pages + gfn[i] * MEMSVC_PAGE, p, MEMSVC_PAGE);
		mark_present(ns, gfn[i]);
	}
	return sync_ns(st, ns, why, whylen);
}

int ms_ns_commit(struct ms_store *st, struct ms_ns *ns, const uint64_t *gfn, uint32_t n, char *why,
		 size_t whylen)
{
	int r = limit_ok(ns, gfn, n, why, whylen);

	if (r)
		return r;
	/* the NIC placed the data before the client asked: only the bits */
	for (uint32_t i = 0; i < n; i++)
		mark_present(ns, gfn[i]);
	return sync_ns(st, ns, why, whylen);
}

static int load_one(struct ms_store *st, const char *file, char *why, size_t whylen)
{
	struct meta_disk m;
	struct ms_ns *ns = NULL;
	size_t nlen = strlen(file) - strlen(".meta");
	ssize_t got;
	int fd, r;

	fd = openat(st->dir_fd, file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		say(why, whylen, "%s/%s: %s", st->dir, file, strerror(errno));
		return -errno;
	}
	got = read(fd, &m, sizeof(m));
	/* one byte more than a meta file has would show a longer file */
	char extra;
	bool longer = got == (ssize_t)sizeof(m) && read(fd, &extra, 1) > 0;
	close(fd);
	if (got != (ssize_t)sizeof(m) || longer) {
		say(why, whylen, "%s/%s: not a namespace metadata file (size)", st->dir, file);
		return -EIO;
	}
	if (memcmp(m.magic, META_MAGIC, 8) || le32toh(m.version) != META_VERSION ||
	    le32toh(m.page_size) != MEMSVC_PAGE) {
		say(why, whylen, "%s/%s: not a version %u namespace metadata file", st->dir, file,
		    META_VERSION);
		return -EIO;
	}
	if (le32toh(m.crc) != crc32c(0, &m, offsetof(struct meta_disk, crc))) {
		say(why, whylen, "%s/%s: checksum mismatch (corrupt)", st->dir, file);
		return -EIO;
	}
	if (memchr(m.name, 0, sizeof(m.name)) == NULL || strlen(m.name) != nlen ||
	    memcmp(m.name, file, nlen) || !memsvc_name_valid(m.name, nlen)) {
		say(why, whylen, "%s/%s: holds the name '%.63s'", st->dir, file, m.name);
		return -EIO;
	}
	ns = ns_alloc();
	if (!ns) {
		say(why, whylen, "out of memory");
		return -ENOMEM;
	}
	memcpy(ns->name, m.name, nlen);
	memcpy(ns->token_hash, m.token_hash, 32);
	ns->nr_pages = le64toh(m.nr_pages);
	ns->limit_pages = le64toh(m.limit_pages);
	ns->epoch = le64toh(m.epoch);
	if (ns->nr_pages == 0 || ns->nr_pages > MEMSVC_MAX_NS_PAGES || ns->limit_pages == 0 ||
	    ns->limit_pages > ns->nr_pages) {
		say(why, whylen, "%s/%s: bad sizes (%llu pages, limit %llu)", st->dir, file,
		    (unsigned long long)ns->nr_pages, (unsigned long long)ns->limit_pages);
		ns_free(ns);
		return -EIO;
	}
	ns->present_bytes = BITMAP_WORDS(ns->nr_pages) * sizeof(uint64_t);
	r = ns_map_files(st, ns, false, why, whylen);
	if (r) {
		ns_free(ns);
		return r;
	}
	/* Bits past the end would be counted as used: refuse the file. */
	if (ns->nr_pages % 64 && ns->present[ns->nr_pages / 64] >> (ns->nr_pages % 64)) {
		say(why, whylen, "%s/%s.present: bits set past page %llu", st->dir, ns->name,
		    (unsigned long long)ns->nr_pages);
		ns_free(ns);
		return -EIO;
	}
	ns->used_pages = bitmap_weight(ns->present, ns->nr_pages);
	ns->next = st->ns;
	st->ns = ns;
	st->nr_ns++;
	st->sum_limits += ns->limit_pages;
	log_info("namespace %s loaded: %llu pages, %llu stored, limit %llu, epoch %llu", ns->name,
		 (unsigned long long)ns->nr_pages, (unsigned long long)ns->used_pages,
		 (unsigned long long)ns->limit_pages, (unsigned long long)ns->epoch);
	return 0;
}

static int load_all(struct ms_store *st, char *why, size_t whylen)
{
	int dfd = dup(st->dir_fd);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	struct dirent *e;
	int r = 0;

	if (!d) {
		if (dfd >= 0)
			close(dfd);
		say(why, whylen, "%s: %s", st->dir, strerror(errno));
		return -errno;
	}
	while (!r && (e = readdir(d))) {
		size_t len = strlen(e->d_name);
		if (e->d_name[0] == '.' || len <= 5 || strcmp(e->d_name + len - 5, ".meta"))
			continue;
		r = load_one(st, e->d_name, why, whylen);
	}
	closedir(d);
	return r;
}

int ms_store_open(const char *dir, bool sync, uint64_t max_mem, struct ms_store **out, char *why,
		  size_t whylen)
{
	struct ms_store *st = calloc(1, sizeof(*st));
	char a[32], b[32];
	int r;

	if (whylen)
		why[0] = 0;
	if (!st) {
		say(why, whylen, "out of memory");
		return -ENOMEM;
	}
	st->dir_fd = st->lock_fd = -1;
	st->sync = sync;
	st->max_pages = max_mem / MEMSVC_PAGE;
	if (dir) {
		st->dir = strdup(dir);
		if (!st->dir) {
			r = -ENOMEM;
			goto fail;
		}
		if (mkdir(dir, 0700) && errno != EEXIST) {
			r = -errno;
			say(why, whylen, "--dir %s: %s", dir, strerror(errno));
			goto fail;
		}
		st->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (st->dir_fd < 0) {
			r = -errno;
			say(why, whylen, "--dir %s: %s", dir, strerror(errno));
			goto fail;
		}
		st->lock_fd = openat(st->dir_fd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (st->lock_fd < 0 || flock(st->lock_fd, LOCK_EX | LOCK_NB)) {
			r = errno == EWOULDBLOCK ? -EBUSY : -errno;
			say(why, whylen, "--dir %s: %s", dir,
			    r == -EBUSY ? "another flit-memsvc is using it" : strerror(-r));
			goto fail;
		}
		r = load_all(st, why, whylen);
		if (r)
			goto fail;
		if (st->max_pages && st->sum_limits > st->max_pages)
			log_warn("the namespaces in %s promise %s, over --max-mem %s: no new "
				 "namespace until some room is made",
				 dir, fmt_size(st->sum_limits * MEMSVC_PAGE, a, sizeof(a)),
				 fmt_size(st->max_pages * MEMSVC_PAGE, b, sizeof(b)));
	}
	*out = st;
	return 0;
fail:
	if (r == -ENOMEM && !why[0])
		say(why, whylen, "out of memory");
	ms_store_close(st);
	return r;
}

void ms_store_close(struct ms_store *st)
{
	if (!st)
		return;
	while (st->ns) {
		struct ms_ns *ns = st->ns;
		st->ns = ns->next;
		ns_free(ns);
	}
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	if (st->dir_fd >= 0)
		close(st->dir_fd);
	free(st->dir);
	free(st);
}
