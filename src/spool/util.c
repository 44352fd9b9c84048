/* util.c: file, time and encoding helpers of the spool layer. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "io/fileio.h"
#include "spool/util.h"

char *
util_read_file(const char *path, size_t max, int nofollow, size_t *len,
    struct sd_error *err)
{
	struct stat st;
	char *buf = NULL;
	size_t n = 0, cap;
	ssize_t r;
	int fd, flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK;

	if (nofollow)
		flags |= O_NOFOLLOW;
	fd = open(path, flags);
	if (fd < 0) {
		if (errno == ENOENT)
			sd_fail(err, SD_ENOINPUT, "%s: no such file", path);
		else if (errno == ELOOP)
			sd_fail(err, SD_EDATA, "%s: is a symbolic link", path);
		else
			sd_fail(err, SD_EIO, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) < 0) {
		sd_fail(err, SD_EIO, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		sd_fail(err, SD_EDATA, "%s: not a regular file", path);
		goto fail;
	}
	if ((uintmax_t)st.st_size > max) {
		sd_fail(err, SD_EDATA, "%s: too large (%jd bytes, the limit is %zu)",
		    path, (intmax_t)st.st_size, max);
		goto fail;
	}
	/* The file may grow while we read: never read more than max + 1. */
	cap = (size_t)st.st_size + 1;
	if ((buf = malloc(cap + 1)) == NULL) {
		sd_fail(err, SD_EINTERNAL, "%s: out of memory", path);
		goto fail;
	}
	for (;;) {
		if (n == cap) {
			if (cap > max)
				break;
			size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
			char *nb = realloc(buf, ncap + 1);
			if (nb == NULL) {
				sd_fail(err, SD_EINTERNAL, "%s: out of memory", path);
				goto fail;
			}
			buf = nb;
			cap = ncap;
		}
		r = read(fd, buf + n, cap - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			sd_fail(err, SD_EIO, "%s: %s", path, strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > max) {
		sd_fail(err, SD_EDATA, "%s: too large (over %zu bytes)", path, max);
		goto fail;
	}
	close(fd);
	buf[n] = '\0';
	if (len != NULL)
		*len = n;
	return buf;
fail:
	free(buf);
	close(fd);
	return NULL;
}

int
util_write_atomic(const char *path, const char *tmpdir, const void *data,
    size_t len, mode_t mode, struct sd_error *err)
{
	(void)tmpdir;	/* the one atomic writer stages in the same folder */
	return sd_write_file_atomic(AT_FDCWD, path, data, len, NULL, (unsigned)mode,
	    0, err);
}

void
util_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
}

int
util_mkdirs(const char *path, struct sd_error *err)
{
	char buf[PATH_MAX];
	size_t n = strlen(path), i;
	struct stat st;

	if (n == 0 || n >= sizeof buf)
		return sd_fail(err, SD_EIO, "%s: bad folder name", path);
	memcpy(buf, path, n + 1);
	for (i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		char c = buf[i];
		buf[i] = '\0';
		if (mkdir(buf, 0777) < 0 && errno != EEXIST)
			return sd_fail(err, SD_EIO, "%s: cannot create folder: %s",
			    buf, strerror(errno));
		buf[i] = c;
	}
	if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
		return sd_fail(err, SD_EIO, "%s: not a folder", path);
	return 0;
}

double
util_now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double
util_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void
util_rfc3339(double t, char *buf, size_t size)
{
	time_t s = (time_t)t;
	int ms = (int)((t - (double)s) * 1000.0);
	struct tm tm;

	if (ms < 0)
		ms = 0;
	if (ms > 999)
		ms = 999;
	gmtime_r(&s, &tm);
	snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, ms);
}

int
util_random(void *buf, size_t n)
{
	unsigned char *p = buf;

	while (n > 0) {
		ssize_t r = getrandom(p, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		p += r;
		n -= (size_t)r;
	}
	if (n > 0) {
		int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return -1;
		while (n > 0) {
			ssize_t r = read(fd, p, n);
			if (r <= 0) {
				close(fd);
				return -1;
			}
			p += r;
			n -= (size_t)r;
		}
		close(fd);
	}
	return 0;
}

uint64_t
util_random_u64(void)
{
	uint64_t v = 0;

	if (util_random(&v, sizeof v) < 0)
		v = (uint64_t)getpid() * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(util_now() * 1e6);
	return v;
}

void
util_random_hex(char *buf, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char b[64];
	size_t i;

	if (n > sizeof b)
		n = sizeof b;
	if (util_random(b, n) < 0)
		for (i = 0; i < n; i++)
			b[i] = (unsigned char)(util_random_u64() >> 8);
	for (i = 0; i < n; i++) {
		buf[2 * i] = hex[b[i] >> 4];
		buf[2 * i + 1] = hex[b[i] & 15];
	}
	buf[2 * n] = '\0';
}

const char *
util_hostname(void)
{
	static char host[256];

	if (host[0] == '\0') {
		if (gethostname(host, sizeof host - 1) < 0 || host[0] == '\0')
			snprintf(host, sizeof host, "localhost");
		host[sizeof host - 1] = '\0';
	}
	return host;
}

const char *
util_boot_id(void)
{
	static char id[64];

	if (id[0] == '\0') {
		int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
		ssize_t n = fd >= 0 ? read(fd, id, sizeof id - 1) : -1;
		if (fd >= 0)
			close(fd);
		id[n > 0 ? n : 0] = '\0';
		id[strcspn(id, "\r\n")] = '\0';
		if (id[0] == '\0')
			snprintf(id, sizeof id, "unknown");
	}
	return id;
}

const char *
util_pid_ns(void)
{
	static char ns[64];

	if (ns[0] == '\0') {
		ssize_t n = readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
		ns[n > 0 ? n : 0] = '\0';
		if (ns[0] == '\0')
			snprintf(ns, sizeof ns, "unknown");
	}
	return ns;
}

void
util_sha256_hex(const void *data, size_t len, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[32];
	unsigned int mdlen = 0;
	unsigned int i;

	EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
	for (i = 0; i < 32; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[64] = '\0';
}

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *
util_base64_encode(const void *data, size_t len)
{
	const unsigned char *p = data;
	size_t i, o = 0;
	char *out;

	if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
		return NULL;
	if ((out = malloc((len + 2) / 3 * 4 + 1)) == NULL)
		return NULL;
	for (i = 0; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = b64[(v >> 6) & 63];
		out[o++] = b64[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)p[i + 1] << 8;
		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = i + 1 < len ? b64[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
	return out;
}

unsigned char *
util_base64_decode(const char *text, size_t *len)
{
	size_t n = strlen(text), i, o = 0, pad = 0;
	unsigned char *out;
	uint32_t acc = 0;
	int bits = 0;

	while (n > 0 && text[n - 1] == '=' && pad < 2) {
		n--;
		pad++;
	}
	if (n % 4 == 1 || (pad > 0 && (n + pad) % 4 != 0))
		return NULL;
	if ((out = malloc(n / 4 * 3 + 3)) == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		const char *c = text[i] ? strchr(b64, text[i]) : NULL;
		if (c == NULL) {
			free(out);
			return NULL;
		}
		acc = acc << 6 | (uint32_t)(c - b64);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	if (len != NULL)
		*len = o;
	return out;
}

int
util_utf8_valid(const char *text, size_t len, size_t *bad)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		uint32_t cp;
		size_t k, need;

		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			need = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			cp = c & 0x07;
		} else
			goto invalid;
		if (len - i <= need)
			goto invalid;
		for (k = 1; k <= need; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				goto invalid;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			goto invalid;
		i += need + 1;
	}
	return 1;
invalid:
	if (bad != NULL)
		*bad = i;
	return 0;
}

size_t
util_utf8_length(const char *text, size_t len)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++)
		if (((unsigned char)text[i] & 0xc0) != 0x80)
			n++;
	return n;
}

char *
util_escape_controls(const char *text, char *out, size_t size)
{
	const unsigned char *p = (const unsigned char *)text;
	size_t o = 0;

	if (size == 0)
		return out;
	while (*p != '\0' && o + 5 < size) {
		unsigned char c = *p;
		size_t bad = 0;
		if (c >= 0x80 && !util_utf8_valid((const char *)p, c >= 0xF0 ? 4 :
		    c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1, &bad)) {
			o += (size_t)snprintf(out + o, size - o, "\\x%02x", c);
			p++;
			continue;
		}
		if (c == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F) {	/* C1 */
			o += (size_t)snprintf(out + o, size - o, "\\x%02x", p[1]);
			p += 2;
			continue;
		}
		if (c < 0x20 || c == 0x7F) {
			const char *e = c == '\n' ? "\\n" : c == '\t' ? "\\t" :
			    c == '\r' ? "\\r" : c == 0x1B ? "\\e" : NULL;
			if (e != NULL)
				o += (size_t)snprintf(out + o, size - o, "%s", e);
			else
				o += (size_t)snprintf(out + o, size - o, "\\x%02x", c);
			p++;
			continue;
		}
		out[o++] = (char)c;
		p++;
	}
	out[o < size ? o : size - 1] = '\0';
	return out;
}

int
util_valid_id(const char *id)
{
	size_t i;

	if (!isalnum((unsigned char)id[0]) || ((unsigned char)id[0] & 0x80))
		return 0;
	for (i = 1; id[i] != '\0'; i++) {
		unsigned char c = (unsigned char)id[i];
		if (i >= 128)
			return 0;
		if (!(c < 0x80 && (isalnum(c) || c == '.' || c == '_' || c == '-')))
			return 0;
	}
	return 1;
}

char *
util_join(const char *dir, const char *name)
{
	size_t n = strlen(dir);

	if (n > 0 && dir[n - 1] == '/')
		return util_printf("%s%s", dir, name);
	return util_printf("%s/%s", dir, name);
}

char *
util_printf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : s;
}

char *
util_dirname(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

int
util_pid_alive(pid_t pid)
{
	if (pid <= 0)
		return 0;
	if (kill(pid, 0) == 0)
		return 1;
	return errno == EPERM;
}

unsigned long long
util_pid_start(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long start = 0;
	ssize_t n;
	int fd, field;

	snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	/* The command name (field 2) may hold spaces and parentheses: the
	 * fields after it start after the last ')'. */
	if ((p = strrchr(buf, ')')) == NULL)
		return 0;
	p++;
	for (field = 3; field < 22 && p != NULL; field++) {
		p = strchr(p + 1, ' ');
	}
	if (p != NULL)
		start = strtoull(p + 1, NULL, 10);
	return start;
}

int
util_sleep(double seconds, const volatile sig_atomic_t *stop, int wake_fd)
{
	double end = util_now_mono() + seconds;

	for (;;) {
		double left = end - util_now_mono();
		struct pollfd pfd = { .fd = wake_fd, .events = POLLIN };
		int ms;

		if (stop != NULL && *stop)
			return 1;
		if (left <= 0)
			return 0;
		ms = left > 0.2 ? 200 : (int)(left * 1000) + 1;
		if (poll(&pfd, wake_fd >= 0 ? 1 : 0, ms) > 0 && wake_fd >= 0)
			return 1;
	}
}

void
util_bytes_text(long long n, const char *unknown, char *buf, size_t size)
{
	if (n < 0)
		snprintf(buf, size, "%s", unknown);
	else if (n < 1000)
		snprintf(buf, size, "%lld B", n);
	else if (n < 1000 * 1000)
		snprintf(buf, size, "%.1f kB", (double)n / 1e3);
	else if (n < 1000LL * 1000 * 1000)
		snprintf(buf, size, "%.1f MB", (double)n / 1e6);
	else
		snprintf(buf, size, "%.2f GB", (double)n / 1e9);
}
