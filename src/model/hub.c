/* hub.c: the Hugging Face Hub cache and downloads (see hub.h). */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "io/fileio.h"
#include "io/jsonerr.h"
#include "io/http.h"
#include "model/hub.h"

#define HUB_PATH_MAX 4096

/* What one pull shares: the resolved settings. */
struct hub_ctx {
	const struct hub_options *o;
	char cache[HUB_PATH_MAX];
	char endpoint[1024];
	char origin[1024];		/* scheme://host[:port] of the endpoint */
	char *auth;			/* "Authorization: Bearer ..." or NULL */
	int offline;
	int index, count;		/* for progress */
};

/* What a HEAD said about a file. */
struct hub_meta {
	char commit[64];
	char etag[160];
	long long size;
	char location[4096];
};

static const char *
env(const char *name)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? v : NULL;
}

int
hub_env_true(const char *name)
{
	const char *v = env(name);

	return v != NULL && (strcmp(v, "1") == 0 || strcasecmp(v, "on") == 0 ||
	    strcasecmp(v, "yes") == 0 || strcasecmp(v, "true") == 0);
}

static int
pathf(char *out, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(out, size, fmt, ap);
	va_end(ap);
	return n < 0 || (size_t)n >= size ? -1 : 0;
}

static int
is_hex(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]))
			return 0;
	return s[n] == '\0';
}

static int
is_commit(const char *s)
{
	return strlen(s) == 40 && is_hex(s, 40);
}

static int
exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static int
is_file(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

void
hub_options_init(struct hub_options *o)
{
	memset(o, 0, sizeof *o);
	o->retries = -1;
}

/* ------------------------------------------------------------ names */

/* A repo name part as the Hub allows it. */
static int
valid_name(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > 96 || s[0] == '-' || s[0] == '.' || s[n - 1] == '-' ||
	    s[n - 1] == '.')
		return 0;
	for (i = 0; i < n; i++) {
		if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_' ||
		    s[i] == '.'))
			return 0;
		if (i > 0 && ((s[i] == '-' && s[i - 1] == '-') ||
		    (s[i] == '.' && s[i - 1] == '.')))
			return 0;
	}
	return 1;
}

static int
revision_char(char c)
{
	return isalnum((unsigned char)c) || strchr("-_.+", c) != NULL;
}

static int
path_char(char c)
{
	return (unsigned char)c >= 0x20 && c != '\\';
}

/* s is '/'-separated parts, none empty, "." or "..", of characters that
 * ok() accepts, shorter than max bytes in all. */
static int
valid_parts(const char *s, size_t max, int (*ok)(char))
{
	const char *p = s;

	if (*s == '\0' || strlen(s) >= max)
		return 0;
	while (*p) {
		size_t n = strcspn(p, "/");

		if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' &&
		    p[1] == '.'))
			return 0;
		for (size_t i = 0; i < n; i++)
			if (!ok(p[i]))
				return 0;
		p += n;
		if (*p == '/' && *++p == '\0')
			return 0;
	}
	return 1;
}

/* A revision: a branch, tag or commit, as a name under refs/. */
static int
valid_revision(const char *s)
{
	return valid_parts(s, 256, revision_char);
}

/* A path inside a repo: relative, no empty, "." or ".." parts. */
static int
valid_path(const char *s)
{
	return valid_parts(s, 1024, path_char);
}

/* "%2F" (and "%2f") back to '/'. */
static void
unescape_slash(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (s[0] == '%' && s[1] == '2' && (s[2] == 'F' || s[2] == 'f')) {
			*w++ = '/';
			s += 2;
		} else
			*w++ = *s;
	}
	*w = '\0';
}

int
hub_parse_id(const char *name, struct hub_id *id)
{
	const char *slash, *name_end, *rest;
	size_t org_len, name_len;

	memset(id, 0, sizeof *id);
	if (name == NULL)
		return -1;
	if (strncmp(name, "hf://", 5) == 0)
		name += 5;
	if ((slash = strchr(name, '/')) == NULL)
		return -1;
	org_len = (size_t)(slash - name);
	name_end = slash + 1 + strcspn(slash + 1, "@/");
	name_len = (size_t)(name_end - slash - 1);
	if (!valid_name(name, org_len) || !valid_name(slash + 1, name_len))
		return -1;
	memcpy(id->repo, name, org_len + 1 + name_len);
	id->repo[org_len + 1 + name_len] = '\0';
	rest = name_end;
	snprintf(id->revision, sizeof id->revision, "main");
	if (*rest == '@') {
		size_t n = strcspn(rest + 1, "/");

		if (n == 0 || n >= sizeof id->revision)
			return -1;
		memcpy(id->revision, rest + 1, n);
		id->revision[n] = '\0';
		unescape_slash(id->revision);
		if (!valid_revision(id->revision))
			return -1;
		rest += 1 + n;
	}
	if (*rest == '/') {
		if (pathf(id->path, sizeof id->path, "%s", rest + 1) < 0 ||
		    !valid_path(id->path))
			return -1;
	}
	return 0;
}

int
hub_is_id(const char *name)
{
	struct hub_id id;

	return hub_parse_id(name, &id) == 0;
}

const char *
hub_cache_dir(const struct hub_options *o, char *buf, size_t size)
{
	const char *v;

	if (o != NULL && o->cache != NULL && *o->cache != '\0')
		snprintf(buf, size, "%s", o->cache);
	else if ((v = env("HF_HUB_CACHE")) != NULL ||
	    (v = env("HUGGINGFACE_HUB_CACHE")) != NULL)
		snprintf(buf, size, "%s", v);
	else if ((v = env("HF_HOME")) != NULL)
		snprintf(buf, size, "%s/hub", v);
	else if ((v = env("XDG_CACHE_HOME")) != NULL)
		snprintf(buf, size, "%s/huggingface/hub", v);
	else if ((v = env("HOME")) != NULL)
		snprintf(buf, size, "%s/.cache/huggingface/hub", v);
	else if (size > 0)
		buf[0] = '\0';
	return buf;
}

/* $HF_HOME, else ${XDG_CACHE_HOME:-$HOME/.cache}/huggingface. */
static int
hf_home(char *buf, size_t size)
{
	const char *v;

	if ((v = env("HF_HOME")) != NULL)
		return pathf(buf, size, "%s", v);
	if ((v = env("XDG_CACHE_HOME")) != NULL)
		return pathf(buf, size, "%s/huggingface", v);
	if ((v = env("HOME")) != NULL)
		return pathf(buf, size, "%s/.cache/huggingface", v);
	return -1;
}

/* "models--org--name" */
static int
repo_folder(const char *repo, char *out, size_t size)
{
	const char *slash = strchr(repo, '/');

	if (slash == NULL)
		return -1;
	return pathf(out, size, "models--%.*s--%s", (int)(slash - repo), repo,
	    slash + 1);
}

int
hub_repo_dir(const struct hub_options *o, const char *repo, char *out,
    size_t size)
{
	char cache[HUB_PATH_MAX], folder[300];

	hub_cache_dir(o, cache, sizeof cache);
	if (cache[0] == '\0' || repo_folder(repo, folder, sizeof folder) < 0)
		return -1;
	return pathf(out, size, "%s/%s", cache, folder);
}

/* ------------------------------------------------------------ files */

/* mkdir -p path */
static int
mkdirs(const char *path)
{
	char buf[HUB_PATH_MAX];
	char *p;

	if (pathf(buf, sizeof buf, "%s", path) < 0)
		return -1;
	for (p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(buf, 0755) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

/* mkdir -p the folder of path */
static int
mkdir_parent(const char *path)
{
	char buf[HUB_PATH_MAX];
	char *slash;

	if (pathf(buf, sizeof buf, "%s", path) < 0)
		return -1;
	if ((slash = strrchr(buf, '/')) == NULL || slash == buf)
		return 0;
	*slash = '\0';
	return mkdirs(buf);
}

/* Write data to path with the one atomic writer (io/fileio.h). */
static int
write_atomic(const char *path, const char *data, struct sd_error *err)
{
	if (mkdir_parent(path) < 0)
		return sd_fail(err, SD_EIO, "cannot create the folder of %s: %s",
		    path, strerror(errno));
	return sd_write_file_atomic(AT_FDCWD, path, data, strlen(data), NULL, 0666,
	    0, err);
}

/* The commit of refs/REVISION (or the revision itself when it is one). */
static int
read_ref(const char *repo_dir, const char *revision, char commit[64])
{
	char path[HUB_PATH_MAX];
	size_t n;
	FILE *f;

	if (is_commit(revision)) {
		snprintf(commit, 64, "%s", revision);
		return 0;
	}
	if (pathf(path, sizeof path, "%s/refs/%s", repo_dir, revision) < 0 ||
	    (f = fopen(path, "r")) == NULL)
		return -1;
	n = fread(commit, 1, 63, f);
	fclose(f);
	commit[n] = '\0';
	commit[strcspn(commit, " \t\r\n")] = '\0';
	return is_commit(commit) ? 0 : -1;
}

/* refs/REVISION := commit, when it differs (huggingface_hub writes it
 * without a newline). */
static int
write_ref(const char *repo_dir, const char *revision, const char *commit,
    struct sd_error *err)
{
	char path[HUB_PATH_MAX], old[64];

	if (strcmp(revision, commit) == 0)
		return 0;
	if (read_ref(repo_dir, revision, old) == 0 && strcmp(old, commit) == 0)
		return 0;
	if (pathf(path, sizeof path, "%s/refs/%s", repo_dir, revision) < 0)
		return sd_fail(err, SD_EIO, "%s: path too long", repo_dir);
	return write_atomic(path, commit, err);
}

static int
copy_file(const char *from, const char *to)
{
	struct sd_atomic_file af;
	char buf[1 << 16];
	ssize_t n;
	int in;

	if ((in = open(from, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	if (sd_atomic_open(&af, AT_FDCWD, to, NULL, 0666, NULL) < 0) {
		close(in);
		return -1;
	}
	while ((n = read(in, buf, sizeof buf)) > 0)
		if (sd_atomic_write(&af, buf, (size_t)n, NULL) < 0) {
			close(in);
			return -1;
		}
	close(in);
	if (n < 0) {
		sd_atomic_abort(&af);
		return -1;
	}
	return sd_atomic_commit(&af, 0, NULL);
}

/* snapshots/COMMIT/FILE -> ../../blobs/ETAG (one more ../ per folder in
 * FILE), made atomically; where the file system has no symbolic links, the
 * blob itself (a new one is moved, an old one copied), as huggingface_hub
 * does. */
static int
make_pointer(const char *repo_dir, const char *commit, const char *file,
    const char *etag, int new_blob, int no_links, char *out, size_t size,
    struct sd_error *err)
{
	char target[HUB_PATH_MAX] = "", tmp[HUB_PATH_MAX], blob[HUB_PATH_MAX];
	const char *p;
	size_t n = 0;

	if (pathf(out, size, "%s/snapshots/%s/%s", repo_dir, commit, file) < 0 ||
	    pathf(blob, sizeof blob, "%s/blobs/%s", repo_dir, etag) < 0 ||
	    pathf(tmp, sizeof tmp, "%s.tmp%ld", out, (long)getpid()) < 0)
		return sd_fail(err, SD_EIO, "%s: path too long", repo_dir);
	n += (size_t)snprintf(target, sizeof target, "../../");
	for (p = file; (p = strchr(p, '/')) != NULL; p++)
		n += (size_t)snprintf(target + n, sizeof target - n, "../");
	if (pathf(target + n, sizeof target - n, "blobs/%s", etag) < 0)
		return sd_fail(err, SD_EIO, "%s: path too long", file);
	if (mkdir_parent(out) < 0)
		return sd_fail(err, SD_EIO, "cannot create the folder of %s: %s",
		    out, strerror(errno));
	unlink(tmp);
	if (!no_links && symlink(target, tmp) == 0) {
		if (rename(tmp, out) < 0) {
			int e = errno;
			unlink(tmp);
			return sd_fail(err, SD_EIO, "cannot rename %s: %s", tmp,
			    strerror(e));
		}
		return 0;
	}
	if (!no_links && errno != EPERM && errno != ENOSYS && errno != EOPNOTSUPP)
		return sd_fail(err, SD_EIO, "cannot create the link %s: %s", tmp,
		    strerror(errno));
	if (new_blob ? rename(blob, out) : copy_file(blob, out))
		return sd_fail(err, SD_EIO, "cannot place %s at %s: %s", blob, out,
		    strerror(errno));
	return 0;
}

/* Touch .no_exist/COMMIT/FILE. */
static void
mark_missing(const char *repo_dir, const char *commit, const char *file)
{
	char path[HUB_PATH_MAX];
	int fd;

	if (pathf(path, sizeof path, "%s/.no_exist/%s/%s", repo_dir, commit,
	    file) < 0 || mkdir_parent(path) < 0)
		return;
	if ((fd = open(path, O_WRONLY | O_CREAT, 0644)) >= 0)
		close(fd);
}

/* The SHA-256 of a file as 64 lowercase hex digits. */
static int
sha256_file(const char *path, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE], *buf;
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx;
	ssize_t n;
	int fd, ok = 0;

	if ((fd = open(path, O_RDONLY)) < 0)
		return -1;
	buf = malloc(1 << 20);
	ctx = EVP_MD_CTX_new();
	if (buf != NULL && ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		while ((n = read(fd, buf, 1 << 20)) > 0)
			EVP_DigestUpdate(ctx, buf, (size_t)n);
		ok = n == 0 && EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == 32;
	}
	EVP_MD_CTX_free(ctx);
	free(buf);
	close(fd);
	if (!ok)
		return -1;
	for (unsigned i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return 0;
}

/* ------------------------------------------------------------ context */

static void
notice(struct hub_ctx *c, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	if (c->o->notice == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	c->o->notice(c->o->user, msg);
}

static void
progress(struct hub_ctx *c, const char *repo, const char *file, long long done,
    long long total, int state)
{
	struct hub_progress p = {
		.repo = repo, .file = file, .index = c->index, .count = c->count,
		.done = done, .total = total, .state = state,
	};

	if (c->o->progress != NULL)
		c->o->progress(c->o->user, &p);
}

/* The token: the option, $HF_TOKEN, $HUGGING_FACE_HUB_TOKEN, the token file. */
static char *
find_token(const struct hub_options *o)
{
	char path[HUB_PATH_MAX], buf[1024];
	const char *v;
	size_t n;
	FILE *f;

	if (o->token != NULL)
		return *o->token != '\0' ? strdup(o->token) : NULL;
	if ((v = env("HF_TOKEN")) != NULL || (v = env("HUGGING_FACE_HUB_TOKEN")) != NULL)
		snprintf(buf, sizeof buf, "%s", v);
	else {
		if ((v = env("HF_TOKEN_PATH")) != NULL)
			snprintf(path, sizeof path, "%s", v);
		else if (hf_home(path, sizeof path - 8) == 0)
			strcat(path, "/token");
		else
			return NULL;
		if ((f = fopen(path, "r")) == NULL)
			return NULL;
		n = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
		buf[n] = '\0';
	}
	/* trim; a token is printable ASCII without spaces */
	v = buf + strspn(buf, " \t\r\n");
	n = strcspn(v, " \t\r\n");
	if (n == 0)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)v[i] < 0x21 || (unsigned char)v[i] > 0x7e)
			return NULL;
	return strndup(v, n);
}

static int
ctx_init(struct hub_ctx *c, const struct hub_options *o, struct sd_error *err)
{
	const char *ep;
	char *token;
	size_t n;

	memset(c, 0, sizeof *c);
	c->o = o;
	hub_cache_dir(o, c->cache, sizeof c->cache);
	if (c->cache[0] == '\0')
		return sd_fail(err, SD_ECONFIG, "no Hugging Face Hub cache folder: set "
		    "HF_HUB_CACHE or HF_HOME (HOME is not set)");
	c->offline = o->offline || hub_env_true("HF_HUB_OFFLINE");
	ep = o->endpoint != NULL && *o->endpoint != '\0' ? o->endpoint :
	    env("HF_ENDPOINT") != NULL ? env("HF_ENDPOINT") : HUB_DEFAULT_ENDPOINT;
	if (pathf(c->endpoint, sizeof c->endpoint, "%s", ep) < 0 ||
	    (strncmp(ep, "http://", 7) != 0 && strncmp(ep, "https://", 8) != 0) ||
	    http_origin(c->endpoint, c->origin, sizeof c->origin) < 0)
		return sd_fail(err, SD_ECONFIG, "Hub endpoint \"%.200s\" is not an "
		    "http:// or https:// URL (HF_ENDPOINT)", ep);
	n = strlen(c->endpoint);
	while (n > 0 && c->endpoint[n - 1] == '/')
		c->endpoint[--n] = '\0';
	if ((token = find_token(o)) != NULL) {
		size_t len = strlen(token) + 32;

		if ((c->auth = malloc(len)) != NULL)
			snprintf(c->auth, len, "Authorization: Bearer %s", token);
		explicit_bzero(token, strlen(token));
		free(token);
		if (c->auth == NULL)
			return sd_fail(err, SD_EINTERNAL, "out of memory");
	}
	return 0;
}

static void
ctx_free(struct hub_ctx *c)
{
	if (c->auth != NULL) {
		explicit_bzero(c->auth, strlen(c->auth));
		free(c->auth);
		c->auth = NULL;
	}
}

/* URL-quote s (keeping '/' when keep_slash) onto out. */
static int
quote(char *out, size_t size, const char *s, int keep_slash)
{
	size_t n = strlen(out);

	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (isalnum(ch) || strchr("-_.~", ch) || (keep_slash && ch == '/')) {
			if (n + 1 >= size)
				return -1;
			out[n++] = (char)ch;
		} else {
			if (n + 3 >= size)
				return -1;
			snprintf(out + n, 4, "%%%02X", ch);
			n += 3;
		}
	}
	out[n] = '\0';
	return 0;
}

static int
file_url(const struct hub_ctx *c, const char *repo, const char *revision,
    const char *file, char *out, size_t size)
{
	if (pathf(out, size, "%s/%s/resolve/", c->endpoint, repo) < 0 ||
	    quote(out, size, revision, 0) < 0 || pathf(out + strlen(out),
	    size - strlen(out), "/") < 0 || quote(out, size, file, 1) < 0)
		return -1;
	return 0;
}

/* A header value safe to show: printable, at most 300 characters. */
static void
clean_text(const char *in, char *out, size_t size)
{
	size_t n = 0;

	for (; in != NULL && *in && n + 1 < size && n < 300; in++)
		out[n++] = (unsigned char)*in < 0x20 || *in == 0x7f ? ' ' : *in;
	out[n] = '\0';
}

/* An HTTP error answer as a message a user can act on. */
static int
http_error(struct hub_ctx *c, const struct hub_id *id, const char *file,
    const struct http_response *rs, struct sd_error *err)
{
	const char *code = http_header(rs, "X-Error-Code");
	char said[400], quoted[420] = "";
	const char *tok = c->auth != NULL ? "the token sent" : "no token was sent";

	clean_text(http_header(rs, "X-Error-Message"), said, sizeof said);
	if (said[0] != '\0')
		snprintf(quoted, sizeof quoted, " (the Hub says: \"%s\")", said);
	if (code == NULL)
		code = "";
	if (strcmp(code, "GatedRepo") == 0)
		return sd_fail(err, SD_EUNAVAILABLE, "%s is a gated model: log in at "
		    "%s/%s and accept its conditions, then set HF_TOKEN to an access "
		    "token of that account (%s)%s", id->repo, c->endpoint, id->repo,
		    c->auth != NULL ? "the token sent has no access" : "no token was set",
		    quoted);
	if (strcmp(code, "RepoNotFound") == 0 || (code[0] == '\0' && rs->status == 401))
		return sd_fail(err, SD_ENOINPUT, "%s: no such model repository at %s "
		    "(check the id; a private repository needs HF_TOKEN set to a token "
		    "with access: %s)%s", id->repo, c->endpoint, tok, quoted);
	if (strcmp(code, "RevisionNotFound") == 0)
		return sd_fail(err, SD_ENOINPUT, "%s: no revision \"%s\" (a branch, tag "
		    "or commit of the repository)%s", id->repo, id->revision, quoted);
	if (strcmp(code, "EntryNotFound") == 0 || rs->status == 404)
		return sd_fail(err, SD_ENOINPUT, "%s@%s: no file %s in the repository%s",
		    id->repo, id->revision, file, quoted);
	if (rs->status == 403)
		return sd_fail(err, SD_EUNAVAILABLE, "%s: access denied (HTTP 403; %s): "
		    "set HF_TOKEN to a token with read access%s", id->repo, tok, quoted);
	if (rs->status == 429)
		return sd_fail(err, SD_EUNAVAILABLE, "%s: the Hub limits the request "
		    "rate (HTTP 429); try again later%s", id->repo, quoted);
	return sd_fail(err, SD_EUNAVAILABLE, "%s: %s: the Hub answered HTTP %ld%s",
	    id->repo, file, rs->status, quoted);
}

/* The headers of a request: the token to the endpoint's host only. */
static void
request_headers(const struct hub_ctx *c, const char *url, const char *extra,
    const char *h[4])
{
	char origin[1024];
	int n = 0;

	h[n++] = "User-Agent: sdbatch/" PACKAGE_VERSION;
	if (c->auth != NULL && http_origin(url, origin, sizeof origin) == 0 &&
	    strcmp(origin, c->origin) == 0)
		h[n++] = c->auth;
	if (extra != NULL)
		h[n++] = extra;
	h[n] = NULL;
}

static void
normalize_etag(const char *in, char *out, size_t size)
{
	size_t n;

	if (strncmp(in, "W/", 2) == 0)
		in += 2;
	while (*in == '"')
		in++;
	snprintf(out, size, "%s", in);
	n = strlen(out);
	while (n > 0 && out[n - 1] == '"')
		out[--n] = '\0';
}

/* An etag that may be a file name. */
static int
valid_etag(const char *s)
{
	if (*s == '\0' || *s == '.' || strlen(s) > 128)
		return 0;
	for (; *s; s++)
		if (!(isalnum((unsigned char)*s) || *s == '-' || *s == '_' || *s == '.'))
			return 0;
	return 1;
}

enum { HEAD_OK, HEAD_HTTP_ERROR, HEAD_NET_ERROR, HEAD_MISSING };

static void nap(double s);

/* HEAD the file: metadata into m.  Relative redirects (a renamed repo) are
 * followed, absolute ones (a CDN for LFS files) give m->location. */
static int
head_file(struct hub_ctx *c, const struct hub_id *id, const char *revision,
    const char *file, struct hub_meta *m, struct http_response *rs,
    struct sd_error *err)
{
	char url[HUB_PATH_MAX], origin[1024];
	const char *h[4], *v;
	int hops, tries, r;

	memset(m, 0, sizeof *m);
	m->size = -1;
	if (file_url(c, id->repo, revision, file, url, sizeof url) < 0)
		return sd_fail(err, SD_EDATA, "%s: %s: name too long", id->repo, file),
		    HEAD_NET_ERROR;
	for (hops = 0, tries = 0;; hops++) {
		struct http_request rq = {
			.method = "HEAD", .url = url, .headers = h, .fd = -1,
			.connect_timeout_s = c->o->timeout_s,
			.stall_timeout_s = c->o->timeout_s,
		};
		request_headers(c, url, "Accept-Encoding: identity", h);
		r = http_perform(&rq, rs, err);
		/* a dropped connection or a server error: twice more (but
		 * not when nothing listens: offline nodes fail fast) */
		if (tries < 2 && ((r < 0 && http_retryable(rs) &&
		    !http_connect_failed(rs)) || (r == 0 && (rs->status >= 500 ||
		    rs->status == 429)))) {
			http_response_free(rs);
			nap(0.5 * ++tries);
			hops--;
			continue;
		}
		if (r < 0) {
			sd_error_prefix(err, "cannot reach %s", c->endpoint);
			http_response_free(rs);
			return HEAD_NET_ERROR;
		}
		v = http_header(rs, "Location");
		if (rs->status >= 300 && rs->status < 400 && v != NULL && v[0] == '/' &&
		    v[1] != '/' && hops < 10) {
			if (http_origin(url, origin, sizeof origin) < 0 ||
			    pathf(url, sizeof url, "%s%s", origin, v) < 0)
				break;
			http_response_free(rs);
			continue;
		}
		break;
	}
	if (rs->status < 200 || rs->status >= 400) {
		/* the commit, when the answer gives it (EntryNotFound) */
		if ((v = http_header(rs, "X-Repo-Commit")) != NULL && is_commit(v))
			snprintf(m->commit, sizeof m->commit, "%s", v);
		http_error(c, id, file, rs, err);
		v = http_header(rs, "X-Error-Code");
		if (v != NULL ? strcmp(v, "EntryNotFound") == 0 :
		    rs->status == 404 && m->commit[0] != '\0')
			return HEAD_MISSING;
		return HEAD_HTTP_ERROR;
	}
	v = http_header(rs, "X-Repo-Commit");
	if (v == NULL || !is_commit(v)) {
		sd_fail(err, SD_EUNAVAILABLE, "%s: %s is not a Hugging Face Hub: its "
		    "answer for %s has no commit (X-Repo-Commit); check HF_ENDPOINT "
		    "and the proxy settings", id->repo, c->endpoint, file);
		return HEAD_HTTP_ERROR;
	}
	snprintf(m->commit, sizeof m->commit, "%s", v);
	if ((v = http_header(rs, "X-Linked-Etag")) == NULL)
		v = http_header(rs, "ETag");
	if (v != NULL)
		normalize_etag(v, m->etag, sizeof m->etag);
	if (v == NULL || !valid_etag(m->etag)) {
		sd_fail(err, SD_EUNAVAILABLE, "%s: %s: the Hub's answer has no usable "
		    "ETag; check HF_ENDPOINT and the proxy settings", id->repo, file);
		return HEAD_HTTP_ERROR;
	}
	if ((v = http_header(rs, "X-Linked-Size")) == NULL)
		v = http_header(rs, "Content-Length");
	if (v != NULL) {
		char *end;
		long long s = strtoll(v, &end, 10);

		if (end != v && *end == '\0' && s >= 0)
			m->size = s;
	}
	v = http_header(rs, "Location");
	if (v != NULL && (strncmp(v, "http://", 7) == 0 || strncmp(v, "https://", 8) == 0))
		snprintf(m->location, sizeof m->location, "%s", v);
	else if (pathf(m->location, sizeof m->location, "%s", url) < 0) {
		sd_fail(err, SD_EDATA, "%s: URL too long", file);
		return HEAD_HTTP_ERROR;
	}
	return HEAD_OK;
}

/* ------------------------------------------------------------ downloads */

struct dl_state {
	struct hub_ctx *c;
	const char *repo, *file;
	long long base, total;
	struct timespec last;
};

static int
on_bytes(void *user, long long now, long long total)
{
	struct dl_state *s = user;
	struct timespec t;

	(void)total;
	if (s->c->o->stop != NULL && *s->c->o->stop)
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &t);
	if ((t.tv_sec - s->last.tv_sec) * 1000000000L + (t.tv_nsec - s->last.tv_nsec) <
	    100000000L)
		return 0;
	s->last = t;
	progress(s->c, s->repo, s->file, s->base + now, s->total, HUB_FILE_PROGRESS);
	return 0;
}

static void
nap(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Does a 206 answer hold the bytes from offset on (Content-Range)? */
static int
range_starts_at(const struct http_response *rs, long long offset)
{
	const char *v = http_header(rs, "Content-Range");
	long long start;

	return v != NULL && sscanf(v, "bytes %lld-", &start) == 1 && start == offset;
}

/* GET m->location into incomplete, resuming what is there, until it holds
 * m->size bytes; then check it. */
static int
fetch_blob(struct hub_ctx *c, const struct hub_id *id, const char *file,
    const struct hub_meta *m, const char *incomplete, struct sd_error *err)
{
	int retries = c->o->retries >= 0 ? c->o->retries : 5, attempt, fd;
	struct dl_state st = { .c = c, .repo = id->repo, .file = file,
	    .total = m->size };
	struct http_response rs;
	struct stat sb;
	char hex[65];
	const char *h[4];
	double delay = 0.25;

	if ((fd = open(incomplete, O_WRONLY | O_CREAT | O_APPEND, 0644)) < 0)
		return sd_fail(err, SD_EIO, "cannot write %s: %s", incomplete,
		    strerror(errno));
	for (attempt = 0;; attempt++) {
		if (fstat(fd, &sb) < 0)
			goto io_error;
		if (m->size >= 0 && sb.st_size > m->size) {
			if (ftruncate(fd, 0) < 0)
				goto io_error;
			sb.st_size = 0;
		}
		if (m->size >= 0 && sb.st_size == m->size)
			break;
		if (sb.st_size > 0 && attempt == 0)
			notice(c, "%s: resuming %s at byte %lld", id->repo, file,
			    (long long)sb.st_size);
		struct http_request rq = {
			.method = "GET", .url = m->location, .headers = h,
			.follow = 1, .fd = fd, .resume_from = sb.st_size,
			.connect_timeout_s = c->o->timeout_s,
			.stall_timeout_s = c->o->timeout_s,
			.progress = on_bytes, .user = &st,
		};
		request_headers(c, m->location, NULL, h);
		st.base = sb.st_size;
		int r = http_perform(&rq, &rs, err);
		long status = rs.status;
		if (r == 0 && status == 206 && !range_starts_at(&rs, sb.st_size)) {
			/* not the part asked for: start over */
			http_response_free(&rs);
			if (ftruncate(fd, 0) < 0)
				goto io_error;
			if (attempt >= retries) {
				close(fd);
				return sd_fail(err, SD_EIO, "%s: %s: the server does not "
				    "answer Range requests right", id->repo, file);
			}
			continue;
		} else if (r == 0 && (status == 200 || status == 206)) {
			http_response_free(&rs);
			if (m->size < 0)
				break;
			if (fstat(fd, &sb) < 0)
				goto io_error;
			if (sb.st_size == m->size)
				break;
			if (attempt >= retries) {
				close(fd);
				unlink(incomplete);
				return sd_fail(err, SD_EIO, "%s: %s: the server sent %lld "
				    "bytes, not the %lld it announced", id->repo, file,
				    (long long)sb.st_size, m->size);
			}
			continue;
		}
		if (r == 0 && status == 416 && sb.st_size > 0) {
			/* nothing past the end: start over */
			http_response_free(&rs);
			if (ftruncate(fd, 0) < 0)
				goto io_error;
		} else if (r == 0 && status < 500 && status != 429) {
			http_error(c, id, file, &rs, err);
			http_response_free(&rs);
			close(fd);
			return -1;
		} else if (r < 0 && !http_retryable(&rs)) {
			http_response_free(&rs);
			sd_error_prefix(err, "%s: %s", id->repo, file);
			close(fd);
			return -1;
		} else
			http_response_free(&rs);
		if (attempt >= retries) {
			if (r == 0)
				http_error(c, id, file, &rs, err);
			sd_error_prefix(err, "%s: %s: gave up after %d attempts (what "
			    "arrived is kept in %s; run again to resume)", id->repo,
			    file, attempt + 1, incomplete);
			close(fd);
			return -1;
		}
		if (fstat(fd, &sb) == 0)
			notice(c, "%s: %s: %s after %lld bytes; resuming", id->repo, file,
			    r == 0 ? "the server failed" : "the connection dropped",
			    (long long)sb.st_size);
		nap(delay);
		delay = delay * 2 > 8 ? 8 : delay * 2;
	}
	if (fsync(fd) < 0 && errno != EINVAL)
		goto io_error;
	if (close(fd) < 0) {
		fd = -1;
		goto io_error;
	}
	if (m->size >= 0 && (stat(incomplete, &sb) < 0 || sb.st_size != m->size))
		return sd_fail(err, SD_EIO, "%s: %s: %lld bytes downloaded, %lld "
		    "expected", id->repo, file, (long long)sb.st_size, m->size);
	if (strlen(m->etag) == 64 && is_hex(m->etag, 64)) {
		if (sha256_file(incomplete, hex) < 0)
			return sd_fail(err, SD_EIO, "cannot read %s: %s", incomplete,
			    strerror(errno));
		if (strcasecmp(hex, m->etag) != 0) {
			unlink(incomplete);
			return sd_fail(err, SD_EIO, "%s: %s: the download is corrupt "
			    "(SHA-256 %s, expected %s); it was removed: run again",
			    id->repo, file, hex, m->etag);
		}
	}
	return 0;
io_error:
	{
		int e = errno;
		if (fd >= 0)
			close(fd);
		return sd_fail(err, SD_EIO, "cannot write %s: %s", incomplete,
		    strerror(e));
	}
}

/* The file from the cache alone: 0, 1 (known missing), or -1 with err
 * saying why (offline, or the Hub unreachable). */
static int
from_cache(struct hub_ctx *c, const struct hub_id *id, const char *file,
    int optional, const char *why, char *out, size_t size, struct sd_error *err)
{
	char repo_dir[HUB_PATH_MAX], commit[64], path[HUB_PATH_MAX];

	if (hub_repo_dir(c->o, id->repo, repo_dir, sizeof repo_dir) < 0)
		return sd_fail(err, SD_EIO, "%s: path too long", id->repo);
	if (read_ref(repo_dir, id->revision, commit) == 0) {
		if (pathf(out, size, "%s/snapshots/%s/%s", repo_dir, commit, file) == 0 &&
		    exists(out))
			return 0;
		if (pathf(path, sizeof path, "%s/.no_exist/%s/%s", repo_dir, commit,
		    file) == 0 && exists(path)) {
			if (optional)
				return 1;
			return sd_fail(err, SD_ENOINPUT, "%s@%s: no file %s in the "
			    "repository (says the Hub cache %s)", id->repo, id->revision,
			    file, repo_dir);
		}
	}
	return sd_fail(err, SD_ENOINPUT, "%s@%s: %s is not in the Hub cache %s%s%s",
	    id->repo, id->revision, file, repo_dir, why ? " and " : "", why ? why : "");
}

/* hf_hub_download: 0 (out: the snapshot path; commit_out: its commit),
 * 1 (an optional file the repo lacks), -1. */
static int
download_file(struct hub_ctx *c, const struct hub_id *id, const char *revision,
    const char *file, int optional, char *out, size_t size, char commit_out[64],
    struct sd_error *err)
{
	char repo_dir[HUB_PATH_MAX], lockdir[HUB_PATH_MAX], lock[HUB_PATH_MAX],
	    blob[HUB_PATH_MAX], incomplete[HUB_PATH_MAX], folder[300];
	struct hub_id at = *id;
	struct http_response rs;
	struct hub_meta m;
	int r, fd;

	if (c->o->stop != NULL && *c->o->stop)
		return sd_fail(err, SD_EREQUEUED, "%s: %s: download interrupted",
		    id->repo, file);
	snprintf(at.revision, sizeof at.revision, "%s", revision);
	if (hub_repo_dir(c->o, id->repo, repo_dir, sizeof repo_dir) < 0 ||
	    repo_folder(id->repo, folder, sizeof folder) < 0)
		return sd_fail(err, SD_EIO, "%s: path too long", id->repo);
	if (is_commit(revision)) {
		/* what a commit holds never changes */
		snprintf(commit_out, 64, "%s", revision);
		if (pathf(out, size, "%s/snapshots/%s/%s", repo_dir, revision, file) == 0 &&
		    exists(out)) {
			progress(c, id->repo, file, -1, -1, HUB_FILE_CACHED);
			return 0;
		}
		if (pathf(lock, sizeof lock, "%s/.no_exist/%s/%s", repo_dir, revision,
		    file) == 0 && exists(lock)) {
			if (!optional)
				return sd_fail(err, SD_ENOINPUT, "%s@%s: no file %s in the "
				    "repository", id->repo, id->revision, file);
			progress(c, id->repo, file, -1, -1, HUB_FILE_ABSENT);
			return 1;
		}
	}
	if (c->offline) {
		r = from_cache(c, &at, file, optional, "HF_HUB_OFFLINE is set (or the "
		    "offline option): nothing is downloaded", out, size, err);
		if (r >= 0) {
			read_ref(repo_dir, revision, commit_out);
			progress(c, id->repo, file, -1, -1, r == 0 ? HUB_FILE_CACHED :
			    HUB_FILE_ABSENT);
		}
		return r;
	}
	r = head_file(c, id, revision, file, &m, &rs, err);
	http_response_free(&rs);
	if (r == HEAD_NET_ERROR) {
		struct sd_error e2 = {0};
		if (from_cache(c, &at, file, optional, NULL, out, size, &e2) == 0) {
			notice(c, "%s (using %s from the cache)", err->message, file);
			read_ref(repo_dir, revision, commit_out);
			progress(c, id->repo, file, -1, -1, HUB_FILE_CACHED);
			return 0;
		}
		return -1;
	}
	if (r == HEAD_MISSING && m.commit[0] != '\0') {
		/* as huggingface_hub: remember it, and the commit */
		mark_missing(repo_dir, m.commit, file);
		write_ref(repo_dir, revision, m.commit, NULL);
		snprintf(commit_out, 64, "%s", m.commit);
	}
	if (r == HEAD_MISSING && optional) {
		progress(c, id->repo, file, -1, -1, HUB_FILE_ABSENT);
		sd_error_clear(err);
		return 1;
	}
	if (r != HEAD_OK)
		return -1;
	snprintf(commit_out, 64, "%s", m.commit);
	if (write_ref(repo_dir, revision, m.commit, err) < 0)
		return -1;
	if (pathf(out, size, "%s/snapshots/%s/%s", repo_dir, m.commit, file) < 0 ||
	    pathf(blob, sizeof blob, "%s/blobs/%s", repo_dir, m.etag) < 0 ||
	    pathf(incomplete, sizeof incomplete, "%s.incomplete", blob) < 0 ||
	    pathf(lockdir, sizeof lockdir, "%s/.locks/%s", c->cache, folder) < 0 ||
	    pathf(lock, sizeof lock, "%s/%s.lock", lockdir, m.etag) < 0)
		return sd_fail(err, SD_EIO, "%s: path too long", repo_dir);
	if (exists(out)) {
		progress(c, id->repo, file, m.size, m.size, HUB_FILE_CACHED);
		return 0;
	}
	if (is_file(blob)) {
		progress(c, id->repo, file, m.size, m.size, HUB_FILE_CACHED);
		return make_pointer(repo_dir, m.commit, file, m.etag, 0,
		    c->o->no_symlinks, out, size, err);
	}
	if (mkdirs(lockdir) < 0 || pathf(incomplete, sizeof incomplete, "%s/blobs",
	    repo_dir) < 0 || mkdirs(incomplete) < 0)
		return sd_fail(err, SD_EIO, "cannot create %s: %s", lockdir, strerror(errno));
	pathf(incomplete, sizeof incomplete, "%s.incomplete", blob);
	if ((fd = open(lock, O_RDWR | O_CREAT, 0644)) < 0)
		return sd_fail(err, SD_EIO, "cannot open the lock %s: %s", lock,
		    strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		notice(c, "%s: waiting for another download of %s (lock %s)", id->repo,
		    file, lock);
		while (flock(fd, LOCK_EX) < 0)
			if (errno != EINTR) {
				close(fd);
				return sd_fail(err, SD_EIO, "cannot lock %s: %s", lock,
				    strerror(errno));
			}
	}
	if (!is_file(blob)) {
		if (fetch_blob(c, id, file, &m, incomplete, err) < 0 ||
		    (rename(incomplete, blob) < 0 && sd_fail(err, SD_EIO,
		    "cannot rename %s: %s", incomplete, strerror(errno)))) {
			close(fd);
			return -1;
		}
		progress(c, id->repo, file, m.size, m.size, HUB_FILE_DONE);
		r = make_pointer(repo_dir, m.commit, file, m.etag, 1,
		    c->o->no_symlinks, out, size, err);
	} else {
		progress(c, id->repo, file, m.size, m.size, HUB_FILE_CACHED);
		r = make_pointer(repo_dir, m.commit, file, m.etag, 0,
		    c->o->no_symlinks, out, size, err);
	}
	close(fd);	/* releases the lock */
	return r;
}

int
hub_download(const struct hub_options *o, const struct hub_id *id,
    const char *file, int optional, char *out, size_t size,
    struct sd_error *err)
{
	struct sd_error local;
	struct hub_ctx c;
	char commit[64];
	int r;

	if (err == NULL)
		err = &local;
	sd_error_clear(err);
	if (!valid_path(file))
		return sd_fail(err, SD_EUSAGE, "%s: \"%s\" is not a file path in a "
		    "repository", id->repo, file);
	if (ctx_init(&c, o, err) < 0)
		return -1;
	r = download_file(&c, id, id->revision, file, optional, out, size, commit, err);
	ctx_free(&c);
	return r;
}

/* ------------------------------------------------------------ pipelines */

/* The files of one part of a pipeline. */
struct want {
	char file[256];
	char alt[256];		/* another variant ("" when none): one of the two */
	int optional;
	/* weights that may come in shards: the index of file, of alt */
	char index[280], index_alt[280];
};

struct want_list {
	struct want w[64];
	size_t n;
};

static void
want_add(struct want_list *l, const char *file, const char *alt, int optional)
{
	if (l->n == sizeof l->w / sizeof l->w[0])
		return;
	snprintf(l->w[l->n].file, sizeof l->w[0].file, "%s", file);
	snprintf(l->w[l->n].alt, sizeof l->w[0].alt, "%s", alt ? alt : "");
	l->w[l->n].optional = optional;
	l->w[l->n].index[0] = l->w[l->n].index_alt[0] = '\0';
	l->n++;
}

/* prefix/BASE.safetensors and prefix/BASE.fp16.safetensors, in the order
 * of preference. */
static void
want_weights(struct want_list *l, const char *prefix, const char *base, int fp16)
{
	char full[256], half[256];

	snprintf(full, sizeof full, "%s%s.safetensors", prefix, base);
	snprintf(half, sizeof half, "%s%s.fp16.safetensors", prefix, base);
	if (fp16)
		want_add(l, half, full, 0);
	else
		want_add(l, full, half, 0);
	if (l->n > 0) {
		/* or sharded: BASE.safetensors.index.json (.index.fp16.json) */
		struct want *w = &l->w[l->n - 1];
		char ifull[280], ihalf[280];
		snprintf(ifull, sizeof ifull, "%s%s.safetensors.index.json", prefix, base);
		snprintf(ihalf, sizeof ihalf, "%s%s.safetensors.index.fp16.json", prefix, base);
		snprintf(w->index, sizeof w->index, "%s", fp16 ? ihalf : ifull);
		snprintf(w->index_alt, sizeof w->index_alt, "%s", fp16 ? ifull : ihalf);
	}
}

/* The shards an index of shards (path, of the part folder prefix, "DIR/")
 * names, each once, into l as wanted files.  -1 when malformed. */
static int
shard_files(const char *path, const char *prefix, struct want_list *l, struct sd_error *err)
{
	json_error_t je;
	json_t *root = json_load_file(path, 0, &je), *map, *v;
	const char *key;

	l->n = 0;
	map = root ? json_object_get(root, "weight_map") : NULL;
	if (!json_is_object(map)) {
		json_decref(root);
		return sd_fail(err, SD_EDATA, "%s: not an index of shards (no weight_map)", path);
	}
	json_object_foreach(map, key, v) {
		const char *shard = json_string_value(v);
		char f[256];
		size_t i;
		if (shard == NULL || strchr(shard, '/') != NULL || shard[0] == '.' || !valid_path(shard)) {
			json_decref(root);
			return sd_fail(err, SD_EDATA, "%s: a shard that is not a file of its folder", path);
		}
		snprintf(f, sizeof f, "%s%s", prefix, shard);
		for (i = 0; i < l->n && strcmp(l->w[i].file, f) != 0; i++)
			;
		if (i == l->n) {
			if (l->n == sizeof l->w / sizeof l->w[0]) {
				json_decref(root);
				return sd_fail(err, SD_EDATA, "%s: more than %zu shards", path,
				    sizeof l->w / sizeof l->w[0]);
			}
			want_add(l, f, NULL, 0);
		}
	}
	json_decref(root);
	return 0;
}

/* The folder part of a wanted file ("text_encoder_3/"), into out. */
static void
want_prefix(const char *file, char *out, size_t size)
{
	const char *slash = strrchr(file, '/');

	snprintf(out, size, "%.*s", slash ? (int)(slash - file + 1) : 0, file);
}

/* What rendering needs, from model_index.json (path): -1 when malformed. */
static int
pipeline_files(const char *path, int fp16, struct want_list *l, struct sd_error *err)
{
	json_error_t je;
	json_t *root = json_load_file(path, 0, &je), *v;
	const char *key;
	char prefix[200];

	l->n = 0;
	if (root == NULL || !json_is_object(root)) {
		json_decref(root);
		return sd_fail(err, SD_EDATA, "%s: not a model_index.json: %s", path,
		    root == NULL ? sd_json_error_kind(&je) : "not a JSON object");
	}
	json_object_foreach(root, key, v) {
		const char *lib, *cls;

		if (key[0] == '_' || !json_is_array(v) || json_array_size(v) != 2 ||
		    !json_is_string(json_array_get(v, 0)) ||
		    !json_is_string(json_array_get(v, 1)))
			continue;
		if (strcmp(key, "safety_checker") == 0 || strcmp(key, "feature_extractor") == 0 ||
		    strcmp(key, "image_encoder") == 0 || !valid_path(key) || strchr(key, '/'))
			continue;
		lib = json_string_value(json_array_get(v, 0));
		cls = json_string_value(json_array_get(v, 1));
		snprintf(prefix, sizeof prefix, "%s/", key);
		if (strstr(cls, "Tokenizer") != NULL && strstr(cls, "T5") == NULL) {
			char f[256];
			snprintf(f, sizeof f, "%svocab.json", prefix);
			want_add(l, f, NULL, 0);
			snprintf(f, sizeof f, "%smerges.txt", prefix);
			want_add(l, f, NULL, 0);
			snprintf(f, sizeof f, "%sspecial_tokens_map.json", prefix);
			want_add(l, f, NULL, 1);
			snprintf(f, sizeof f, "%stokenizer_config.json", prefix);
			want_add(l, f, NULL, 1);
		} else if (strstr(cls, "Tokenizer") != NULL && strstr(cls, "T5") != NULL) {
			/* SD3's T5 tokenizer: SentencePiece (checked before the
			 * CLIP tokenizers below) */
			char f[256];
			snprintf(f, sizeof f, "%sspiece.model", prefix);
			want_add(l, f, NULL, 0);
			snprintf(f, sizeof f, "%sspecial_tokens_map.json", prefix);
			want_add(l, f, NULL, 1);
			snprintf(f, sizeof f, "%stokenizer_config.json", prefix);
			want_add(l, f, NULL, 1);
		} else if (strstr(cls, "Scheduler") != NULL) {
			char f[256];
			snprintf(f, sizeof f, "%sscheduler_config.json", prefix);
			want_add(l, f, NULL, 0);
		} else {
			char f[256];
			snprintf(f, sizeof f, "%sconfig.json", prefix);
			want_add(l, f, NULL, 0);
			want_weights(l, prefix, strcmp(lib, "transformers") == 0 ? "model" :
			    "diffusion_pytorch_model", fp16);
		}
	}
	json_decref(root);
	return 0;
}

static int
snapshot_has(const char *snap, const char *file)
{
	char path[HUB_PATH_MAX];

	return pathf(path, sizeof path, "%s/%s", snap, file) == 0 && exists(path);
}

/* Fetch the wanted files at commit; -1 on the first error. */
static int
fetch_wants(struct hub_ctx *c, const struct hub_id *id, const char *commit,
    const struct want_list *l, struct sd_error *err)
{
	char path[HUB_PATH_MAX], got[64];
	size_t i;
	int r;

	c->count = (int)l->n + 1;	/* and model_index.json, fetched first */
	for (i = 0; i < l->n; i++) {
		const struct want *w = &l->w[i];

		c->index = (int)i + 2;
		r = download_file(c, id, commit, w->file, w->optional || w->alt[0] || w->index[0],
		    path, sizeof path, got, err);
		if (r == 1 && w->alt[0])
			r = download_file(c, id, commit, w->alt, w->optional || w->index[0], path,
			    sizeof path, got, err);
		for (int k = 0; r == 1 && k < 2 && w->index[0]; k++) {
			/* sharded weights: the index, then every shard it names */
			struct want_list shards;
			char prefix[256];
			r = download_file(c, id, commit, k ? w->index_alt : w->index, 1, path,
			    sizeof path, got, err);
			if (r != 0)
				continue;
			want_prefix(w->file, prefix, sizeof prefix);
			if (shard_files(path, prefix, &shards, err) < 0)
				return -1;
			for (size_t j = 0; j < shards.n; j++)
				if (download_file(c, id, commit, shards.w[j].file, 0, path, sizeof path,
				    got, err) < 0)
					return -1;
		}
		if (r == 1 && w->alt[0] && !w->optional)
			return sd_fail(err, SD_ENOINPUT, "%s@%s: neither %s nor %s in "
			    "the repository", id->repo, id->revision, w->file, w->alt);
		if (r < 0)
			return -1;
	}
	return 0;
}

/* A repo without model_index.json: one diffusers part (a VAE, a UNet). */
static int
pull_part(struct hub_ctx *c, const struct hub_id *id, const char *commit,
    char *out, size_t size, struct sd_error *err)
{
	struct want_list l = { .n = 0 };
	char repo_dir[HUB_PATH_MAX], got[64];
	int r;

	want_add(&l, "config.json", NULL, 1);
	want_weights(&l, "", "diffusion_pytorch_model", c->o->prefer_fp16);
	c->count = 2;
	c->index = 1;
	if (download_file(c, id, commit, "config.json", 1, out, size, got, err) < 0)
		return -1;
	c->index = 2;
	r = download_file(c, id, commit, l.w[1].file, 1, out, size, got, err);
	if (r == 1)
		r = download_file(c, id, commit, l.w[1].alt, 1, out, size, got, err);
	if (r == 1) {
		/* a tokenizer (openai/clip-vit-large-patch14): its folder */
		static const char *const tok[] = { "vocab.json", "merges.txt",
		    "special_tokens_map.json", "tokenizer_config.json" };
		char path[HUB_PATH_MAX];

		c->count = 4;
		c->index = 1;
		r = download_file(c, id, commit, tok[0], 1, path, sizeof path, got, err);
		for (size_t i = 1; r == 0 && i < 4; i++) {
			c->index = (int)i + 1;
			if (download_file(c, id, commit, tok[i], i != 1, path, sizeof path,
			    got, err) < 0)
				return -1;
		}
		if (r < 0)
			return -1;
		if (r == 0) {
			if (hub_repo_dir(c->o, id->repo, repo_dir, sizeof repo_dir) < 0 ||
			    pathf(out, size, "%s/snapshots/%s", repo_dir, got) < 0)
				return sd_fail(err, SD_EIO, "path too long");
			return 0;
		}
		return sd_fail(err, SD_ENOINPUT, "%s@%s holds neither model_index.json "
		    "(a diffusers pipeline) nor diffusion_pytorch_model.safetensors "
		    "nor a tokenizer: name the checkpoint file, as in "
		    "%s/FILE.safetensors", id->repo, id->revision, id->repo);
	}
	return r < 0 ? -1 : 0;
}

static int
pull_id(struct hub_ctx *c, const struct hub_id *id, const char *const *files,
    size_t n_files, char *out, size_t size, struct sd_error *err)
{
	char commit[64] = "", path[HUB_PATH_MAX], snap[HUB_PATH_MAX],
	    repo_dir[HUB_PATH_MAX];
	struct want_list l = { .n = 0 };
	size_t i;
	int r;

	if (hub_repo_dir(c->o, id->repo, repo_dir, sizeof repo_dir) < 0)
		return sd_fail(err, SD_EIO, "%s: path too long", id->repo);
	if (id->path[0] != '\0' || n_files > 0) {
		/* the files named: the first one fixes the commit */
		c->count = id->path[0] ? 1 : (int)n_files;
		for (i = 0; i < (size_t)c->count; i++) {
			const char *f = id->path[0] ? id->path : files[i];

			if (!valid_path(f))
				return sd_fail(err, SD_EUSAGE, "\"%s\" is not a file path "
				    "in a repository", f);
			char at[256];

			c->index = (int)i + 1;
			snprintf(at, sizeof at, "%s", commit[0] ? commit : id->revision);
			if (download_file(c, id, at, f, 0, path, sizeof path, commit,
			    err) < 0)
				return -1;
		}
		if (id->path[0] != '\0')
			return pathf(out, size, "%s", path) < 0 ?
			    sd_fail(err, SD_EIO, "path too long") : 0;
		return pathf(out, size, "%s/snapshots/%s", repo_dir, commit) < 0 ?
		    sd_fail(err, SD_EIO, "path too long") : 0;
	}
	c->count = 0;
	c->index = 1;
	r = download_file(c, id, id->revision, "model_index.json", 1, path,
	    sizeof path, commit, err);
	if (r < 0)
		return -1;
	if (r == 1)
		return pull_part(c, id, commit, out, size, err);
	if (pipeline_files(path, c->o->prefer_fp16, &l, err) < 0 ||
	    fetch_wants(c, id, commit, &l, err) < 0)
		return -1;
	if (pathf(snap, sizeof snap, "%s/snapshots/%s", repo_dir, commit) < 0 ||
	    pathf(out, size, "%s", snap) < 0)
		return sd_fail(err, SD_EIO, "path too long");
	return 0;
}

int
hub_pull(const struct hub_options *o, const char *name,
    const char *const *files, size_t n_files, char *out, size_t size,
    struct sd_error *err)
{
	struct sd_error local;
	struct hub_ctx c;
	struct hub_id id;
	int r;

	if (err == NULL)
		err = &local;
	sd_error_clear(err);
	if (hub_parse_id(name, &id) < 0)
		return sd_fail(err, SD_EUSAGE, "\"%s\" is not a Hugging Face Hub id "
		    "(ORG/NAME, ORG/NAME@REVISION or ORG/NAME[@REVISION]/FILE)", name);
	if (ctx_init(&c, o, err) < 0)
		return -1;
	r = pull_id(&c, &id, files, n_files, out, size, err);
	ctx_free(&c);
	return r;
}

/* ------------------------------------------------------------ cache only */

int
hub_cached(const struct hub_options *o, const char *name, char *out,
    size_t size, struct sd_error *err)
{
	char repo_dir[HUB_PATH_MAX], commit[64], snap[HUB_PATH_MAX],
	    path[HUB_PATH_MAX], missing[1024] = "";
	struct want_list l = { .n = 0 };
	struct hub_id id;
	size_t i, nmiss = 0;

	if (hub_parse_id(name, &id) < 0)
		return sd_fail(err, SD_ENOINPUT, "\"%s\" is not a Hugging Face Hub id",
		    name);
	if (hub_repo_dir(o, id.repo, repo_dir, sizeof repo_dir) < 0)
		return sd_fail(err, SD_ECONFIG, "no Hugging Face Hub cache folder: set "
		    "HF_HUB_CACHE or HF_HOME");
	if (!exists(repo_dir))
		return sd_fail(err, SD_ENOINPUT, "%s is not in the Hub cache (no %s)",
		    id.repo, repo_dir);
	if (read_ref(repo_dir, id.revision, commit) < 0)
		return sd_fail(err, SD_ENOINPUT, "%s: revision %s is not in the Hub "
		    "cache (no %s/refs/%s)", id.repo, id.revision, repo_dir, id.revision);
	if (pathf(snap, sizeof snap, "%s/snapshots/%s", repo_dir, commit) < 0)
		return sd_fail(err, SD_EIO, "path too long");
	if (id.path[0] != '\0') {
		if (pathf(path, sizeof path, "%s/%s", snap, id.path) < 0 || !exists(path))
			return sd_fail(err, SD_ENOINPUT, "%s@%s: %s is not in the Hub "
			    "cache (no %s)", id.repo, id.revision, id.path, path);
		return pathf(out, size, "%s", path) < 0 ?
		    sd_fail(err, SD_EIO, "path too long") : 0;
	}
	if (pathf(path, sizeof path, "%s/model_index.json", snap) < 0)
		return sd_fail(err, SD_EIO, "path too long");
	if (!exists(path)) {
		/* one diffusers part */
		static const char *const parts[] = {
			"diffusion_pytorch_model.safetensors",
			"diffusion_pytorch_model.fp16.safetensors",
		};
		for (i = 0; i < 2; i++)
			if (pathf(path, sizeof path, "%s/%s", snap, parts[i]) == 0 &&
			    is_file(path))
				return pathf(out, size, "%s", path) < 0 ?
				    sd_fail(err, SD_EIO, "path too long") : 0;
		/* a tokenizer */
		if (snapshot_has(snap, "vocab.json") && snapshot_has(snap, "merges.txt"))
			return pathf(out, size, "%s", snap) < 0 ?
			    sd_fail(err, SD_EIO, "path too long") : 0;
		return sd_fail(err, SD_ENOINPUT, "%s@%s: the Hub cache snapshot %s "
		    "holds no model_index.json", id.repo, id.revision, snap);
	}
	if (pipeline_files(path, o->prefer_fp16, &l, err) < 0)
		return -1;
	for (i = 0; i < l.n; i++) {
		const struct want *w = &l.w[i];

		if (w->optional || snapshot_has(snap, w->file) ||
		    (w->alt[0] && snapshot_has(snap, w->alt)))
			continue;
		if (w->index[0]) {
			/* sharded: an index whose shards are all there */
			int whole = 0;
			for (int k = 0; k < 2 && !whole; k++) {
				const char *ix = k ? w->index_alt : w->index;
				struct want_list shards;
				struct sd_error e2 = {0};
				char prefix[256];
				size_t j;
				if (!snapshot_has(snap, ix) || pathf(path, sizeof path, "%s/%s", snap, ix) < 0)
					continue;
				want_prefix(w->file, prefix, sizeof prefix);
				if (shard_files(path, prefix, &shards, &e2) < 0)
					continue;
				for (j = 0; j < shards.n && snapshot_has(snap, shards.w[j].file); j++)
					;
				whole = shards.n > 0 && j == shards.n;
			}
			if (whole)
				continue;
		}
		if (nmiss++ < 4)
			snprintf(missing + strlen(missing), sizeof missing - strlen(missing),
			    "%s%s", nmiss > 1 ? ", " : "", w->file);
	}
	if (nmiss > 0)
		return sd_fail(err, SD_ENOINPUT, "%s@%s: the Hub cache snapshot %s lacks "
		    "%s%s", id.repo, id.revision, snap, missing, nmiss > 4 ? ", ..." : "");
	return pathf(out, size, "%s", snap) < 0 ? sd_fail(err, SD_EIO,
	    "path too long") : 0;
}

int
hub_resolve_model(const char *name, const struct hub_options *o,
    char *out, size_t size, struct sd_error *err)
{
	struct sd_error local;

	if (err == NULL)
		err = &local;
	if (name == NULL || *name == '\0')
		return sd_fail(err, SD_ENOINPUT, "no model given");
	if (exists(name))
		return pathf(out, size, "%s", name) < 0 ?
		    sd_fail(err, SD_EIO, "path too long") : 0;
	if (!hub_is_id(name))
		return sd_fail(err, SD_ENOINPUT, "%s: no such file or folder", name);
	if (hub_cached(o, name, out, size, err) == 0)
		return 0;
	if (!o->download)
		return sd_error_prefix(err, "%s is not ready in the local Hub cache; "
		    "run `sdbatch pull %s` (or allow downloads: hub: download: true "
		    "in the configuration)", name, name);
	if (o->offline || hub_env_true("HF_HUB_OFFLINE"))
		return sd_error_prefix(err, "%s is not ready in the local Hub cache "
		    "and HF_HUB_OFFLINE is set", name);
	sd_error_clear(err);
	return hub_pull(o, name, NULL, 0, out, size, err);
}
