/* hookd.c: a small Standard Webhooks receiver for the callback tests.
 *
 * It listens on 127.0.0.1 only, verifies each POST the way a receiver
 * library does (its own base64 and signing-string code, libcrypto's HMAC):
 * webhook-id, webhook-timestamp within 5 minutes, and webhook-signature
 * "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>" (space-separated
 * list) with key = base64-decode(secret without "whsec_").  It never uses
 * sdbatch's own code.
 *
 *   hookd -p PORTFILE -d DIR [-s SECRET] [-m MODE] [-t SECONDS]
 *
 * MODE: ok (200), fail:N (500 N times, then 200), gone (410), hang (never
 * answer), retry:N (503 with Retry-After: N the first time, then 200),
 * big (200 with a 2 MiB body, which a sender must not read as a failure).
 * Each request appends one line to DIR/requests.log:
 *   n=1 id=msg_... ts=... event=job.done sig=ok|bad|none type=application/json
 *   bytes=123 answer=200
 * and its body goes to DIR/body-N.json.  Exits after -t seconds (default
 * 120) or on SIGTERM. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

static volatile sig_atomic_t done;

static void
on_term(int sig)
{
	(void)sig;
	done = 1;
}

/* base64, written here again on purpose: the receiver's own code. */
static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void
b64_encode(const unsigned char *in, size_t n, char *out)
{
	size_t i;

	for (i = 0; i < n; i += 3) {
		unsigned v = (unsigned)in[i] << 16;
		if (i + 1 < n)
			v |= (unsigned)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		*out++ = alphabet[(v >> 18) & 63];
		*out++ = alphabet[(v >> 12) & 63];
		*out++ = i + 1 < n ? alphabet[(v >> 6) & 63] : '=';
		*out++ = i + 2 < n ? alphabet[v & 63] : '=';
	}
	*out = '\0';
}

static int
b64_decode(const char *in, unsigned char *out, size_t *n)
{
	unsigned v = 0;
	int bits = 0;

	*n = 0;
	for (; *in && *in != '='; in++) {
		const char *p = strchr(alphabet, *in);
		if (p == NULL)
			return -1;
		v = (v << 6) | (unsigned)(p - alphabet);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[(*n)++] = (unsigned char)(v >> bits);
		}
	}
	return 0;
}

/* Does one of the space-separated "v1,..." signatures match? */
static const char *
verify(const char *secret, const char *id, const char *ts, const char *body,
    size_t len, const char *sigs)
{
	unsigned char key[256], mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	char expect[128], *msg, *copy, *tok, *save = NULL;
	size_t keylen, mlen;
	int ok = 0;
	long long t;

	if (sigs == NULL)
		return "none";
	if (strncmp(secret, "whsec_", 6) == 0)
		secret += 6;
	if (strlen(secret) > 300 || b64_decode(secret, key, &keylen) < 0)
		return "badsecret";
	if (id == NULL || ts == NULL)
		return "bad";
	t = atoll(ts);
	if (llabs(t - (long long)time(NULL)) > 300)
		return "stale";
	mlen = strlen(id) + 1 + strlen(ts) + 1 + len;
	msg = malloc(mlen);
	snprintf(msg, mlen, "%s.%s.", id, ts);
	memcpy(msg + strlen(id) + 1 + strlen(ts) + 1, body, len);
	HMAC(EVP_sha256(), key, (int)keylen, (unsigned char *)msg, mlen, mac, &maclen);
	free(msg);
	b64_encode(mac, maclen, expect);
	copy = strdup(sigs);
	for (tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
		if (strncmp(tok, "v1,", 3) == 0 && strcmp(tok + 3, expect) == 0)
			ok = 1;
	free(copy);
	return ok ? "ok" : "bad";
}

static char *
header(char *head, const char *name)
{
	size_t n = strlen(name);
	char *p = head;

	while ((p = strstr(p, "\r\n")) != NULL) {
		p += 2;
		if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
			char *v = p + n + 1, *end;
			while (*v == ' ' || *v == '\t')
				v++;
			end = strstr(v, "\r\n");
			return end ? strndup(v, (size_t)(end - v)) : strdup(v);
		}
	}
	return NULL;
}

static void
log_line(const char *dir, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
log_line(const char *dir, const char *fmt, ...)
{
	char path[4096];
	va_list ap;
	FILE *f;

	snprintf(path, sizeof path, "%s/requests.log", dir);
	if ((f = fopen(path, "a")) == NULL)
		return;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fclose(f);
}

int
main(int argc, char **argv)
{
	const char *portfile = NULL, *dir = ".", *secret = NULL, *mode = "ok";
	struct sockaddr_in addr;
	socklen_t alen = sizeof addr;
	int s, ch, n = 0, fails = 0;
	double limit = 120;
	time_t start = time(NULL);
	struct sigaction sa;

	while ((ch = getopt(argc, argv, "p:d:s:m:t:")) != -1) {
		switch (ch) {
		case 'p': portfile = optarg; break;
		case 'd': dir = optarg; break;
		case 's': secret = optarg; break;
		case 'm': mode = optarg; break;
		case 't': limit = atof(optarg); break;
		default:
			fprintf(stderr, "usage: hookd -p PORTFILE -d DIR [-s SECRET] "
			    "[-m ok|fail:N|gone|hang|retry:N] [-t SECONDS]\n");
			return 64;
		}
	}
	if (strncmp(mode, "fail:", 5) == 0)
		fails = atoi(mode + 5);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	s = socket(AF_INET, SOCK_STREAM, 0);
	memset(&addr, 0, sizeof addr);
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = 0;
	if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) < 0 ||
	    listen(s, 16) < 0 || getsockname(s, (struct sockaddr *)&addr, &alen) < 0) {
		perror("hookd");
		return 1;
	}
	if (portfile != NULL) {
		char tmp[4096];
		FILE *f;
		snprintf(tmp, sizeof tmp, "%s.tmp", portfile);
		if ((f = fopen(tmp, "w")) == NULL) {
			perror(tmp);
			return 1;
		}
		fprintf(f, "%d\n", ntohs(addr.sin_port));
		fclose(f);
		rename(tmp, portfile);
	}
	while (!done && difftime(time(NULL), start) < limit) {
		struct pollfd pfd = { .fd = s, .events = POLLIN };
		char buf[1 << 16], *head, *body, path[4096], *hid, *hts, *hsig, *hev, *hct;
		char *hcl;
		size_t got = 0, need;
		int c, answer;
		const char *sig, *reason;
		FILE *f;

		if (poll(&pfd, 1, 200) <= 0)
			continue;
		if ((c = accept(s, NULL, NULL)) < 0)
			continue;
		/* The head, then the body (Content-Length). */
		head = NULL;
		while (got < sizeof buf - 1) {
			ssize_t r = recv(c, buf + got, sizeof buf - 1 - got, 0);
			if (r <= 0)
				break;
			got += (size_t)r;
			buf[got] = '\0';
			if ((head = strstr(buf, "\r\n\r\n")) != NULL)
				break;
		}
		if (head == NULL) {
			close(c);
			continue;
		}
		*head = '\0';
		body = head + 4;
		hcl = header(buf, "Content-Length");
		need = hcl ? (size_t)atol(hcl) : 0;
		free(hcl);
		{
			size_t have = got - (size_t)(body - buf);
			char *full = malloc(need + 1);
			memcpy(full, body, have < need ? have : need);
			while (have < need) {
				ssize_t r = recv(c, full + have, need - have, 0);
				if (r <= 0)
					break;
				have += (size_t)r;
			}
			full[need] = '\0';
			body = full;
		}
		n++;
		hid = header(buf, "webhook-id");
		hts = header(buf, "webhook-timestamp");
		hsig = header(buf, "webhook-signature");
		hev = header(buf, "X-Sdbatch-Event");
		hct = header(buf, "Content-Type");
		sig = secret ? verify(secret, hid, hts, body, need, hsig) :
		    hsig ? "unchecked" : "none";
		snprintf(path, sizeof path, "%s/body-%d.json", dir, n);
		if ((f = fopen(path, "w")) != NULL) {
			fwrite(body, 1, need, f);
			fclose(f);
		}
		if (strcmp(mode, "hang") == 0) {
			log_line(dir, "n=%d id=%s ts=%s event=%s sig=%s type=%s bytes=%zu "
			    "answer=none\n", n, hid ? hid : "-", hts ? hts : "-",
			    hev ? hev : "-", sig, hct ? hct : "-", need);
			/* Never answer: wait until the client gives up. */
			while (!done && recv(c, buf, sizeof buf, 0) > 0)
				;
			close(c);
		} else {
			char resp[256];
			const char *extra = "";
			answer = 200;
			reason = "OK";
			if (fails > 0 && n <= fails) {
				answer = 500;
				reason = "Internal Server Error";
			} else if (strcmp(mode, "gone") == 0) {
				answer = 410;
				reason = "Gone";
			} else if (strncmp(mode, "retry:", 6) == 0 && n == 1) {
				static char ra[64];
				answer = 503;
				reason = "Service Unavailable";
				snprintf(ra, sizeof ra, "Retry-After: %s\r\n", mode + 6);
				extra = ra;
			}
			/* A receiver rejects a bad signature. */
			if (secret != NULL && strcmp(sig, "ok") != 0) {
				answer = 401;
				reason = "Unauthorized";
			}
			log_line(dir, "n=%d id=%s ts=%s event=%s sig=%s type=%s bytes=%zu "
			    "answer=%d\n", n, hid ? hid : "-", hts ? hts : "-",
			    hev ? hev : "-", sig, hct ? hct : "-", need, answer);
			if (strcmp(mode, "big") == 0 && answer == 200) {
				size_t big = (size_t)2 << 20, sent = 0;
				char *junk = malloc(65536);
				snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\n"
				    "Content-Length: %zu\r\nConnection: close\r\n\r\n", big);
				(void)!send(c, resp, strlen(resp), 0);
				if (junk != NULL) {
					memset(junk, 'x', 65536);
					while (sent < big && send(c, junk, 65536,
					    MSG_NOSIGNAL) > 0)
						sent += 65536;
					free(junk);
				}
			} else {
				snprintf(resp, sizeof resp, "HTTP/1.1 %d %s\r\n%s"
				    "Content-Length: 0\r\nConnection: close\r\n\r\n",
				    answer, reason, extra);
				(void)!send(c, resp, strlen(resp), 0);
			}
			close(c);
		}
		free(body);
		free(hid);
		free(hts);
		free(hsig);
		free(hev);
		free(hct);
	}
	close(s);
	return 0;
}
