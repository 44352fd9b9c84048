/* fakehub.c: a small stand-in for the Hugging Face Hub, for the tests.
 *
 * It serves the repos under ROOT (ROOT/ORG/NAME/...) the way
 * huggingface.co answers /ORG/NAME/resolve/REVISION/PATH, on 127.0.0.1
 * only, one connection at a time, and never follows anything outside ROOT.
 * It is written apart from sdbatch's code on purpose.
 *
 *   fakehub -r ROOT -p PORTFILE [-l LOG] [-t SECONDS] [-d BYTES] [-e N] [-s RATE] [-T TOKEN]
 *
 * Small files answer 200 with ETag "<git blob SHA-1>"; *.safetensors,
 * *.bin and *.ckpt files are LFS files: 302 with X-Linked-Etag
 * "<SHA-256>", X-Linked-Size and a Location (an absolute URL on this
 * server, /lfs/<SHA-256>) that serves the content, with Range requests.
 * Every answer carries X-Repo-Commit: ROOT/ORG/NAME/.commit, or the SHA-1
 * of "ORG/NAME".  Revisions: main, the commit, and the names listed in
 * .refs.  A repo with a .gated file wants "Authorization: Bearer TOKEN"
 * (401/403 with X-Error-Code: GatedRepo otherwise); one with a .moved file
 * (holding NEWORG/NEWNAME) answers with a relative redirect there.  Errors:
 * RepoNotFound (401), RevisionNotFound and EntryNotFound (404).
 * -d BYTES: the first GET of each LFS file stops after BYTES and the
 * connection drops.  -e N: the first N requests for /ORG/NAME/resolve/
 * answer 503.  -s RATE: bodies are sent at RATE bytes a second.
 * Each request appends a line to LOG:
 *   METHOD PATH status=N range=bytes=N-|- auth=none|ok|bad
 * Exits after -t seconds (default 60) or on SIGTERM. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#define MAX_FILES 512

struct entry {
	char repo[600];		/* org/name */
	char path[1024];	/* in the repo */
	char disk[4096];
	long long size;
	int lfs;
	int dropped;		/* -d done for this file */
	char sha1[41], sha256[65];
};

static struct entry files[MAX_FILES];
static int n_files;
static const char *root, *token;
static FILE *logf;
static long long drop_after = -1, rate;
static int port, fail_first;
static volatile sig_atomic_t done;

static void
on_term(int sig)
{
	(void)sig;
	done = 1;
}

static void
die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("fakehub: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void
hex(const unsigned char *md, unsigned n, char *out)
{
	for (unsigned i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void
digest(const char *path, long long size, char sha1[41], char sha256[65])
{
	EVP_MD_CTX *a = EVP_MD_CTX_new(), *b = EVP_MD_CTX_new();
	unsigned char buf[65536], md[EVP_MAX_MD_SIZE];
	char head[64];
	unsigned n;
	ssize_t r;
	int fd = open(path, O_RDONLY);

	if (fd < 0 || a == NULL || b == NULL)
		die("%s: %s", path, strerror(errno));
	EVP_DigestInit_ex(a, EVP_sha1(), NULL);
	EVP_DigestInit_ex(b, EVP_sha256(), NULL);
	snprintf(head, sizeof head, "blob %lld", size);
	EVP_DigestUpdate(a, head, strlen(head) + 1);
	while ((r = read(fd, buf, sizeof buf)) > 0) {
		EVP_DigestUpdate(a, buf, (size_t)r);
		EVP_DigestUpdate(b, buf, (size_t)r);
	}
	close(fd);
	EVP_DigestFinal_ex(a, md, &n);
	hex(md, n, sha1);
	EVP_DigestFinal_ex(b, md, &n);
	hex(md, n, sha256);
	EVP_MD_CTX_free(a);
	EVP_MD_CTX_free(b);
}

static int
ends(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Add the files under dir (repo-relative prefix rel). */
static void
scan(const char *repo, const char *dir, const char *rel)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	struct stat st;
	char path[4096], sub[1024];

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		snprintf(sub, sizeof sub, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name);
		if (stat(path, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			scan(repo, path, sub);
			continue;
		}
		if (!S_ISREG(st.st_mode) || n_files == MAX_FILES)
			continue;
		struct entry *f = &files[n_files++];
		snprintf(f->repo, sizeof f->repo, "%s", repo);
		snprintf(f->path, sizeof f->path, "%s", sub);
		snprintf(f->disk, sizeof f->disk, "%s", path);
		f->size = (long long)st.st_size;
		f->lfs = ends(sub, ".safetensors") || ends(sub, ".bin") || ends(sub, ".ckpt");
		digest(path, f->size, f->sha1, f->sha256);
	}
	closedir(d);
}

static void
scan_root(void)
{
	DIR *orgs = opendir(root), *names;
	struct dirent *o, *n;
	char dir[4096], repo[600];

	if (orgs == NULL)
		die("%s: %s", root, strerror(errno));
	while ((o = readdir(orgs)) != NULL) {
		if (o->d_name[0] == '.')
			continue;
		snprintf(dir, sizeof dir, "%s/%s", root, o->d_name);
		if ((names = opendir(dir)) == NULL)
			continue;
		while ((n = readdir(names)) != NULL) {
			if (n->d_name[0] == '.')
				continue;
			snprintf(repo, sizeof repo, "%s/%s", o->d_name, n->d_name);
			snprintf(dir, sizeof dir, "%s/%s", root, repo);
			scan(repo, dir, "");
		}
		closedir(names);
	}
	closedir(orgs);
}

/* The first line of ROOT/repo/name, or NULL. */
static char *
repo_file(const char *repo, const char *name, char *buf, size_t size)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s/%s", root, repo, name);
	if ((f = fopen(path, "r")) == NULL)
		return NULL;
	if (fgets(buf, (int)size, f) == NULL)
		buf[0] = '\0';
	fclose(f);
	buf[strcspn(buf, "\r\n")] = '\0';
	return buf;
}

static void
repo_commit(const char *repo, char out[41])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n;
	char buf[128];

	if (repo_file(repo, ".commit", buf, sizeof buf) != NULL && strlen(buf) == 40) {
		memcpy(out, buf, 41);
		return;
	}
	EVP_Digest(repo, strlen(repo), md, &n, EVP_sha1(), NULL);
	hex(md, n, out);
}

static int
has_ref(const char *repo, const char *rev)
{
	char path[4096], line[512];
	FILE *f;
	int found = 0;

	snprintf(path, sizeof path, "%s/%s/.refs", root, repo);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	while (!found && fgets(line, sizeof line, f) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		found = strcmp(line, rev) == 0;
	}
	fclose(f);
	return found;
}

/* ------------------------------------------------------------ HTTP */

static int
send_all(int fd, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += w;
		n -= (size_t)w;
	}
	return 0;
}

static void
nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Send bytes [from, to) of a file, at most limit of them (-1: all). */
static void
send_body(int fd, const char *disk, long long from, long long to, long long limit)
{
	char buf[16384];
	int in = open(disk, O_RDONLY);
	long long sent = 0;

	if (in < 0 || lseek(in, from, SEEK_SET) < 0) {
		if (in >= 0)
			close(in);
		return;
	}
	while (from + sent < to && (limit < 0 || sent < limit) && !done) {
		long long want = to - from - sent;
		if (want > (long long)sizeof buf)
			want = sizeof buf;
		if (limit >= 0 && want > limit - sent)
			want = limit - sent;
		ssize_t r = read(in, buf, (size_t)want);
		if (r <= 0 || send_all(fd, buf, (size_t)r) < 0)
			break;
		sent += r;
		if (rate > 0)
			nap_ms((long)(r * 1000 / rate));
	}
	close(in);
}

struct req {
	char method[16];
	char target[4096];
	char range[128];
	char auth[512];
};

/* Read a request head (bounded: 16 KiB, 5 s). */
static int
read_request(int fd, struct req *rq)
{
	char buf[16384];
	size_t n = 0;
	char *end, *line, *next;

	memset(rq, 0, sizeof *rq);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 5000) <= 0)
			return -1;
		ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
		if (r <= 0)
			return -1;
		n += (size_t)r;
		buf[n] = '\0';
		if ((end = strstr(buf, "\r\n\r\n")) != NULL)
			break;
		if (n == sizeof buf - 1)
			return -1;
	}
	*end = '\0';
	if (sscanf(buf, "%15s %4095s", rq->method, rq->target) != 2)
		return -1;
	for (line = strstr(buf, "\r\n"); line != NULL; line = next) {
		line += 2;
		next = strstr(line, "\r\n");
		if (next != NULL)
			*next = '\0';
		char *colon = strchr(line, ':');
		if (colon == NULL)
			continue;
		*colon = '\0';
		char *v = colon + 1;
		while (*v == ' ')
			v++;
		if (strcasecmp(line, "Range") == 0)
			snprintf(rq->range, sizeof rq->range, "%s", v);
		else if (strcasecmp(line, "Authorization") == 0)
			snprintf(rq->auth, sizeof rq->auth, "%s", v);
	}
	return 0;
}

static void
url_decode(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (*s == '%' && isxdigit((unsigned char)s[1]) && isxdigit((unsigned char)s[2])) {
			char h[3] = { s[1], s[2], 0 };
			*w++ = (char)strtol(h, NULL, 16);
			s += 2;
		} else
			*w++ = *s;
	}
	*w = '\0';
}

static void
log_request(const struct req *rq, int status, const char *auth)
{
	if (logf == NULL)
		return;
	fprintf(logf, "%s %s status=%d range=%s auth=%s\n", rq->method, rq->target,
	    status, rq->range[0] ? rq->range : "-", auth);
	fflush(logf);
}

static void
answer(int fd, const struct req *rq, const char *auth, int status,
    const char *reason, const char *headers)
{
	char head[8192];

	/* logged first: a client that got the answer finds it in the log */
	log_request(rq, status, auth);
	snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nConnection: close\r\n%s\r\n",
	    status, reason, headers);
	send_all(fd, head, strlen(head));
}

static void
error_answer(int fd, const struct req *rq, const char *auth, int status,
    const char *code, const char *message, const char *commit)
{
	char h[1024], body[512];

	snprintf(body, sizeof body, "{\"error\":\"%s\"}", message);
	snprintf(h, sizeof h, "Content-Type: application/json\r\nContent-Length: %zu\r\n"
	    "X-Error-Code: %s\r\nX-Error-Message: %s\r\n%s%s%s", strlen(body), code,
	    message, commit ? "X-Repo-Commit: " : "", commit ? commit : "",
	    commit ? "\r\n" : "");
	answer(fd, rq, auth, status, status == 401 ? "Unauthorized" : status == 403 ?
	    "Forbidden" : "Not Found", h);
	if (strcmp(rq->method, "HEAD") != 0)
		send_all(fd, body, strlen(body));
}

/* Serve an entry's content (200, or 206/416 for a Range). */
static void
serve_content(int fd, const struct req *rq, const char *auth, struct entry *f,
    const char *extra)
{
	long long from = 0, to = f->size;
	char h[2048];
	int drop = 0;

	if (rq->range[0] != '\0') {
		long long a = -1, b = -1;
		if (sscanf(rq->range, "bytes=%lld-%lld", &a, &b) < 1 || a < 0) {
			answer(fd, rq, auth, 400, "Bad Request", "Content-Length: 0\r\n");
			return;
		}
		if (a >= f->size) {
			snprintf(h, sizeof h, "Content-Range: bytes */%lld\r\n"
			    "Content-Length: 0\r\n", f->size);
			answer(fd, rq, auth, 416, "Range Not Satisfiable", h);
			return;
		}
		from = a;
		if (b >= a && b < f->size)
			to = b + 1;
		snprintf(h, sizeof h, "%sContent-Range: bytes %lld-%lld/%lld\r\n"
		    "Content-Length: %lld\r\nAccept-Ranges: bytes\r\n"
		    "Content-Type: application/octet-stream\r\n", extra, from, to - 1,
		    f->size, to - from);
		answer(fd, rq, auth, 206, "Partial Content", h);
	} else {
		snprintf(h, sizeof h, "%sContent-Length: %lld\r\nAccept-Ranges: bytes\r\n"
		    "Content-Type: application/octet-stream\r\n", extra, f->size);
		answer(fd, rq, auth, 200, "OK", h);
	}
	if (strcmp(rq->method, "GET") != 0)
		return;
	if (f->lfs && drop_after >= 0 && !f->dropped) {
		f->dropped = 1;
		drop = 1;
	}
	send_body(fd, f->disk, from, to, drop ? drop_after : -1);
}

static void
handle(int fd)
{
	struct req rq;
	char *p, repo[512], rev[512], path[2048], commit[41], h[4096], moved[512];
	const char *auth;
	struct stat st;
	int i;

	if (read_request(fd, &rq) < 0)
		return;
	auth = rq.auth[0] == '\0' ? "none" : token != NULL &&
	    strncmp(rq.auth, "Bearer ", 7) == 0 && strcmp(rq.auth + 7, token) == 0 ?
	    "ok" : "bad";
	if (strcmp(rq.method, "GET") != 0 && strcmp(rq.method, "HEAD") != 0) {
		answer(fd, &rq, auth, 405, "Method Not Allowed", "Content-Length: 0\r\n");
		return;
	}
	char target[4096];
	snprintf(target, sizeof target, "%s", rq.target);
	if ((p = strchr(target, '?')) != NULL)
		*p = '\0';
	if (strncmp(target, "/lfs/", 5) == 0) {
		for (i = 0; i < n_files; i++)
			if (files[i].lfs && strcmp(files[i].sha256, target + 5) == 0)
				break;
		if (i == n_files) {
			answer(fd, &rq, auth, 404, "Not Found", "Content-Length: 0\r\n");
			return;
		}
		snprintf(h, sizeof h, "ETag: \"%s\"\r\n", files[i].sha256);
		serve_content(fd, &rq, auth, &files[i], h);
		return;
	}
	if (fail_first > 0 && strstr(target, "/resolve/") != NULL) {
		fail_first--;
		answer(fd, &rq, auth, 503, "Service Unavailable", "Content-Length: 0\r\n");
		return;
	}
	/* /ORG/NAME/resolve/REV/PATH, each part URL-encoded */
	char org[256], name[256];
	if (sscanf(target, "/%255[^/]/%255[^/]/resolve/%511[^/]/%2047s", org, name,
	    rev, path) != 4) {
		answer(fd, &rq, auth, 404, "Not Found", "Content-Length: 0\r\n");
		return;
	}
	url_decode(org);
	url_decode(name);
	url_decode(rev);
	url_decode(path);
	snprintf(repo, sizeof repo, "%s/%s", org, name);
	snprintf(h, sizeof h, "%s/%s", root, repo);
	if (strstr(repo, "..") != NULL || org[0] == '.' || name[0] == '.' ||
	    stat(h, &st) < 0 || !S_ISDIR(st.st_mode)) {
		error_answer(fd, &rq, auth, 401, "RepoNotFound", "Repository not found",
		    NULL);
		return;
	}
	if (repo_file(repo, ".moved", moved, sizeof moved) != NULL) {
		/* a renamed repo: a relative redirect, as the Hub sends */
		const char *rest = strstr(rq.target, "/resolve/");
		snprintf(h, sizeof h, "Location: /%s%s\r\nContent-Length: 0\r\n", moved, rest);
		answer(fd, &rq, auth, 307, "Temporary Redirect", h);
		return;
	}
	repo_commit(repo, commit);
	if (repo_file(repo, ".gated", moved, sizeof moved) != NULL &&
	    strcmp(auth, "ok") != 0) {
		char msg[512];
		snprintf(msg, sizeof msg, "Access to model %s is restricted. You must "
		    "have access to it and be authenticated to access it. Please log in.",
		    repo);
		error_answer(fd, &rq, auth, strcmp(auth, "none") == 0 ? 401 : 403,
		    "GatedRepo", msg, NULL);
		return;
	}
	if (strcmp(rev, "main") != 0 && strcmp(rev, commit) != 0 && !has_ref(repo, rev)) {
		char msg[600];
		snprintf(msg, sizeof msg, "Invalid rev id: %s", rev);
		error_answer(fd, &rq, auth, 404, "RevisionNotFound", msg, NULL);
		return;
	}
	for (i = 0; i < n_files; i++)
		if (strcmp(files[i].repo, repo) == 0 && strcmp(files[i].path, path) == 0)
			break;
	if (i == n_files) {
		error_answer(fd, &rq, auth, 404, "EntryNotFound", "Entry not found", commit);
		return;
	}
	if (files[i].lfs) {
		snprintf(h, sizeof h, "X-Repo-Commit: %s\r\nX-Linked-Etag: \"%s\"\r\n"
		    "X-Linked-Size: %lld\r\nETag: \"%s\"\r\n"
		    "Location: http://127.0.0.1:%d/lfs/%s?name=%s\r\nContent-Length: 0\r\n",
		    commit, files[i].sha256, files[i].size, files[i].sha1, port,
		    files[i].sha256, name);
		answer(fd, &rq, auth, 302, "Found", h);
		return;
	}
	snprintf(h, sizeof h, "X-Repo-Commit: %s\r\nETag: \"%s\"\r\n", commit, files[i].sha1);
	serve_content(fd, &rq, auth, &files[i], h);
}

int
main(int argc, char **argv)
{
	const char *portfile = NULL, *logpath = NULL;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof sa;
	long lifetime = 60;
	time_t start = time(NULL);
	char tmp[4096];
	FILE *f;
	int ch, s, one = 1;

	while ((ch = getopt(argc, argv, "r:p:l:t:d:e:s:T:")) != -1) {
		switch (ch) {
		case 'r': root = optarg; break;
		case 'p': portfile = optarg; break;
		case 'l': logpath = optarg; break;
		case 't': lifetime = atol(optarg); break;
		case 'd': drop_after = atoll(optarg); break;
		case 'e': fail_first = atoi(optarg); break;
		case 's': rate = atoll(optarg); break;
		case 'T': token = optarg; break;
		default:
			fprintf(stderr, "usage: fakehub -r ROOT -p PORTFILE [-l LOG] "
			    "[-t SECONDS] [-d BYTES] [-e N] [-s RATE] [-T TOKEN]\n");
			return 64;
		}
	}
	if (root == NULL || portfile == NULL)
		die("-r ROOT and -p PORTFILE are required");
	if (lifetime <= 0 || lifetime > 600)
		lifetime = 60;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	scan_root();
	if (logpath != NULL && (logf = fopen(logpath, "a")) == NULL)
		die("%s: %s", logpath, strerror(errno));
	if ((s = socket(AF_INET, SOCK_STREAM, 0)) < 0)
		die("socket: %s", strerror(errno));
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(s, 16) < 0 ||
	    getsockname(s, (struct sockaddr *)&sa, &len) < 0)
		die("bind: %s", strerror(errno));
	port = ntohs(sa.sin_port);
	snprintf(tmp, sizeof tmp, "%s.tmp", portfile);
	if ((f = fopen(tmp, "w")) == NULL)
		die("%s: %s", tmp, strerror(errno));
	fprintf(f, "%d\n", port);
	fclose(f);
	rename(tmp, portfile);
	while (!done && time(NULL) - start < lifetime) {
		struct pollfd p = { .fd = s, .events = POLLIN };
		if (poll(&p, 1, 200) <= 0)
			continue;
		int c = accept(s, NULL, NULL);
		if (c < 0)
			continue;
		handle(c);
		shutdown(c, SHUT_WR);
		close(c);
	}
	close(s);
	if (logf != NULL)
		fclose(logf);
	return 0;
}
