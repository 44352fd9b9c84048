/* http.c: one HTTP request with libcurl (see http.h). */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>

#include "io/http.h"

struct transfer {
	const struct http_request *rq;
	struct http_response *rs;
	CURL *curl;
	int checked;		/* the status of the body's response was looked at */
	int keep;		/* the body goes to rq->fd */
};

int
http_global_init(void)
{
	static int done;

	if (!done) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return -1;
		done = 1;
	}
	return 0;
}

static void
clear_headers(struct http_response *rs)
{
	size_t i;

	for (i = 0; i < rs->n_headers; i++) {
		free(rs->headers[i][0]);
		free(rs->headers[i][1]);
	}
	rs->n_headers = 0;
}

void
http_response_free(struct http_response *rs)
{
	clear_headers(rs);
	free(rs->effective_url);
	rs->effective_url = NULL;
}

const char *
http_header(const struct http_response *rs, const char *name)
{
	size_t i;

	for (i = 0; i < rs->n_headers; i++)
		if (strcasecmp(rs->headers[i][0], name) == 0)
			return rs->headers[i][1];
	return NULL;
}

/* One header line; a status line starts a new response (after a redirect
 * or a 100 Continue), so the headers kept are those of the last one. */
static size_t
on_header(char *buf, size_t size, size_t n, void *user)
{
	struct transfer *t = user;
	struct http_response *rs = t->rs;
	size_t len = size * n, k, v;
	char *colon;

	if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
		clear_headers(rs);
		return len;
	}
	colon = memchr(buf, ':', len);
	if (colon == NULL || rs->n_headers == HTTP_MAX_HEADERS)
		return len;
	k = (size_t)(colon - buf);
	v = k + 1;
	while (v < len && (buf[v] == ' ' || buf[v] == '\t'))
		v++;
	while (len > v && (buf[len - 1] == '\r' || buf[len - 1] == '\n' ||
	    buf[len - 1] == ' ' || buf[len - 1] == '\t'))
		len--;
	if ((rs->headers[rs->n_headers][0] = strndup(buf, k)) == NULL ||
	    (rs->headers[rs->n_headers][1] = strndup(buf + v, len - v)) == NULL) {
		free(rs->headers[rs->n_headers][0]);
		return 0;
	}
	rs->n_headers++;
	return size * n;
}

static size_t
on_body(char *buf, size_t size, size_t n, void *user)
{
	struct transfer *t = user;
	size_t len = size * n, off = 0;
	long status = 0;

	if (!t->checked) {
		t->checked = 1;
		curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
		t->keep = t->rq->fd >= 0 && (status == 200 || status == 206);
		if (t->keep && status == 200 && t->rq->resume_from > 0) {
			/* The server ignored the Range: start over. */
			if (ftruncate(t->rq->fd, 0) < 0) {
				t->rs->write_errno = errno;
				return 0;
			}
			t->rs->restarted = 1;
		}
	}
	if (!t->keep)
		return len;
	while (off < len) {
		ssize_t w = write(t->rq->fd, buf + off, len - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			t->rs->write_errno = errno;
			return 0;
		}
		off += (size_t)w;
	}
	t->rs->received += (long long)len;
	return len;
}

static int
on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
    curl_off_t ulnow)
{
	struct transfer *t = user;

	(void)ultotal;
	(void)ulnow;
	if (t->rq->progress == NULL || !t->keep)
		return 0;
	return t->rq->progress(t->rq->user, (long long)dlnow,
	    dltotal > 0 ? (long long)dltotal : -1);
}

int
http_perform(const struct http_request *rq, struct http_response *rs,
    struct sd_error *err)
{
	struct transfer t = { .rq = rq, .rs = rs };
	struct curl_slist *list = NULL, *l2;
	char errbuf[CURL_ERROR_SIZE] = "", range[64];
	const char *const *h;
	char *eff = NULL;
	CURLcode rc;
	int ret = 0;

	memset(rs, 0, sizeof *rs);
	if (http_global_init() < 0)
		return sd_fail(err, SD_EINTERNAL, "cannot initialize libcurl");
	if ((t.curl = curl_easy_init()) == NULL)
		return sd_fail(err, SD_EINTERNAL, "cannot initialize libcurl");
	for (h = rq->headers; h != NULL && *h != NULL; h++) {
		if ((l2 = curl_slist_append(list, *h)) == NULL)
			goto oom;
		list = l2;
	}
	curl_easy_setopt(t.curl, CURLOPT_URL, rq->url);
	curl_easy_setopt(t.curl, CURLOPT_HTTPHEADER, list);
	curl_easy_setopt(t.curl, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(t.curl, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(t.curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(t.curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(t.curl, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
	curl_easy_setopt(t.curl, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(t.curl, CURLOPT_FOLLOWLOCATION, rq->follow ? 1L : 0L);
	curl_easy_setopt(t.curl, CURLOPT_MAXREDIRS, 10L);
	curl_easy_setopt(t.curl, CURLOPT_CONNECTTIMEOUT,
	    rq->connect_timeout_s > 0 ? rq->connect_timeout_s : 30L);
	/* A stalled transfer (under 1 byte/s for that long) is an error. */
	curl_easy_setopt(t.curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(t.curl, CURLOPT_LOW_SPEED_TIME,
	    rq->stall_timeout_s > 0 ? rq->stall_timeout_s : 60L);
	curl_easy_setopt(t.curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(t.curl, CURLOPT_HEADERDATA, &t);
	curl_easy_setopt(t.curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(t.curl, CURLOPT_WRITEDATA, &t);
	curl_easy_setopt(t.curl, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(t.curl, CURLOPT_XFERINFODATA, &t);
	curl_easy_setopt(t.curl, CURLOPT_NOPROGRESS, 0L);
	if (strcmp(rq->method, "HEAD") == 0)
		curl_easy_setopt(t.curl, CURLOPT_NOBODY, 1L);
	else if (rq->resume_from > 0) {
		snprintf(range, sizeof range, "%lld-", rq->resume_from);
		curl_easy_setopt(t.curl, CURLOPT_RANGE, range);
	}
	rc = curl_easy_perform(t.curl);
	curl_easy_getinfo(t.curl, CURLINFO_RESPONSE_CODE, &rs->status);
	if (curl_easy_getinfo(t.curl, CURLINFO_EFFECTIVE_URL, &eff) == CURLE_OK &&
	    eff != NULL)
		rs->effective_url = strdup(eff);
	if (rc != CURLE_OK) {
		rs->transport_error = (int)rc;
		if (rs->write_errno != 0)
			ret = sd_fail(err, SD_EIO, "cannot write the download: %s",
			    strerror(rs->write_errno));
		else if (rc == CURLE_ABORTED_BY_CALLBACK)
			ret = sd_fail(err, SD_EREQUEUED, "download interrupted");
		else
			ret = sd_fail(err, SD_EUNAVAILABLE, "%s",
			    errbuf[0] ? errbuf : curl_easy_strerror(rc));
	}
	curl_slist_free_all(list);
	curl_easy_cleanup(t.curl);
	return ret;
oom:
	curl_slist_free_all(list);
	curl_easy_cleanup(t.curl);
	return sd_fail(err, SD_EINTERNAL, "out of memory");
}

int
http_retryable(const struct http_response *rs)
{
	switch ((CURLcode)rs->transport_error) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_PARTIAL_FILE:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_SSL_CONNECT_ERROR:
		return 1;
	default:
		return 0;
	}
}

int
http_connect_failed(const struct http_response *rs)
{
	return rs->transport_error == (int)CURLE_COULDNT_CONNECT ||
	    rs->transport_error == (int)CURLE_COULDNT_RESOLVE_HOST ||
	    rs->transport_error == (int)CURLE_COULDNT_RESOLVE_PROXY;
}

int
http_origin(const char *url, char *out, size_t size)
{
	const char *p = strstr(url, "://"), *end;

	if (p == NULL)
		return -1;
	p += 3;
	end = p + strcspn(p, "/?#");
	if (end == p || (size_t)(end - url) >= size)
		return -1;
	memcpy(out, url, (size_t)(end - url));
	out[end - url] = '\0';
	for (char *c = out; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	return 0;
}
