/* http.h: one HTTP request with libcurl, for downloads.
 *
 * A small layer over libcurl's easy interface: a HEAD or GET with extra
 * headers, optionally without following redirects, with the body of a
 * successful GET appended to a file descriptor from a given offset (an HTTP
 * Range request), and the response's status and headers kept for the
 * caller.  It knows nothing of the Hugging Face Hub. */
#ifndef SD_IO_HTTP_H
#define SD_IO_HTTP_H

#include "core/error.h"

#define HTTP_MAX_HEADERS 64

struct http_request {
	const char *method;		/* "HEAD" or "GET" */
	const char *url;
	const char *const *headers;	/* "Name: value" lines, NULL-terminated, or NULL */
	int follow;			/* follow redirects (at most 10) */
	long connect_timeout_s;		/* 0: 30 s */
	long stall_timeout_s;		/* abort when no byte came for this long (0: 60 s) */
	int fd;				/* GET: where a 200/206 body is appended, or -1 */
	long long resume_from;		/* > 0: ask for bytes resume_from.. (Range) */
	/* Called as the body arrives (now: bytes received in this request,
	 * total: expected in this request or -1); nonzero aborts the transfer. */
	int (*progress)(void *user, long long now, long long total);
	void *user;
};

struct http_response {
	long status;			/* 0 when no answer came */
	int restarted;			/* a Range was asked, the whole body came (fd truncated) */
	long long received;		/* body bytes written to fd */
	int transport_error;		/* the request failed below HTTP (a CURLcode) */
	int write_errno;		/* errno of a failed write to fd, else 0 */
	char *effective_url;		/* the last URL (after redirects) */
	size_t n_headers;
	char *headers[HTTP_MAX_HEADERS][2];	/* of the last response: name, value */
};

/* Initialize libcurl once (not thread-safe on old libcurl: call early). */
int http_global_init(void);

/* Perform rq; rs is filled even on failure (free it with
 * http_response_free).  Returns 0 when an HTTP answer came (whatever its
 * status), -1 with err (SD_EUNAVAILABLE for network failures, SD_EIO for a
 * failed write to fd) otherwise; a transfer cut short returns -1 too, with
 * rs->received telling how much arrived. */
int http_perform(const struct http_request *rq, struct http_response *rs,
    struct sd_error *err);

/* The value of header name (case-insensitive) in rs, or NULL. */
const char *http_header(const struct http_response *rs, const char *name);

void http_response_free(struct http_response *rs);

/* Is the transport error of a failed http_perform worth a retry (a
 * connection dropped or timed out, rather than a bad URL)? */
int http_retryable(const struct http_response *rs);

/* Did a failed http_perform find nothing to connect to (no such host, or
 * the connection refused)? */
int http_connect_failed(const struct http_response *rs);

/* The "scheme://host[:port]" part of url into out (for same-host checks
 * and for relative redirects); -1 when url has none. */
int http_origin(const char *url, char *out, size_t size);

#endif
