/* callback.c: signed HTTP callbacks with libcurl. */
#include "config.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/socket.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "spool/callback.h"
#include "spool/policy.h"
#include "spool/util.h"

int
callback_global_init(void)
{
	return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

char *
callback_signature(const unsigned char *key, size_t keylen, const char *id,
    long long timestamp, const char *body, size_t len)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char ts[32], *b64, *out;

	snprintf(ts, sizeof ts, "%lld", timestamp);
	/* The one-shot HMAC() (not deprecated, unlike HMAC_CTX) over the
	 * whole signed message "id.timestamp.body". */
	size_t n = strlen(id) + 1 + strlen(ts) + 1 + len;
	char *msg = malloc(n + 1);
	if (msg == NULL)
		return NULL;
	snprintf(msg, n + 1, "%s.%s.", id, ts);
	memcpy(msg + strlen(id) + 1 + strlen(ts) + 1, body, len);
	if (HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, n,
	    md, &mdlen) == NULL) {
		free(msg);
		return NULL;
	}
	OPENSSL_cleanse(msg, n);
	free(msg);
	if ((b64 = util_base64_encode(md, mdlen)) == NULL)
		return NULL;
	out = util_printf("v1,%s", b64);
	free(b64);
	return out;
}

unsigned char *
callback_secret_key(const char *secret, size_t *keylen)
{
	unsigned char *key;

	if (strncmp(secret, "whsec_", 6) == 0)
		secret += 6;
	if (*secret == '\0')
		return NULL;
	key = util_base64_decode(secret, keylen);
	if (key != NULL && *keylen == 0) {
		free(key);
		return NULL;
	}
	return key;
}

double
callback_retry_after(const char *value, double now)
{
	static const char *const months[12] = { "Jan", "Feb", "Mar", "Apr",
	    "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	char mon[4], wd[4], *end;
	int day, year, hh, mm, ss, m;
	struct tm tm;
	double v;

	while (isspace((unsigned char)*value))
		value++;
	if (isdigit((unsigned char)*value)) {
		v = strtod(value, &end);
		while (isspace((unsigned char)*end))
			end++;
		return *end == '\0' && v >= 0 && isfinite(v) ? v : -1;
	}
	/* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
	if (sscanf(value, "%3s, %d %3s %d %d:%d:%d GMT", wd, &day, mon, &year,
	    &hh, &mm, &ss) != 7)
		return -1;
	for (m = 0; m < 12; m++)
		if (strcmp(mon, months[m]) == 0)
			break;
	if (m == 12 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60)
		return -1;
	memset(&tm, 0, sizeof tm);
	tm.tm_year = year - 1900;
	tm.tm_mon = m;
	tm.tm_mday = day;
	tm.tm_hour = hh;
	tm.tm_min = mm;
	tm.tm_sec = ss;
	v = (double)timegm(&tm) - now;
	return v < 0 ? 0 : v;
}

double
callback_backoff(const struct callback_config *cfg, int attempt)
{
	double d = cfg->backoff_s * pow(2.0, attempt > 1 ? attempt - 1 : 0);
	double jitter = (double)(util_random_u64() >> 11) / 9007199254740992.0;

	if (d > cfg->backoff_max_s)
		d = cfg->backoff_max_s;
	return d * (0.5 + jitter);
}

struct attempt {
	char retry_after[128];
	size_t received;
	const volatile sig_atomic_t *stop;
	const struct sd_policy *policy;
	int denied;		/* an address the policy refuses */
};

/* Every address curl connects to (after DNS) passes the policy. */
static curl_socket_t
on_open(void *user, curlsocktype purpose, struct curl_sockaddr *addr)
{
	struct attempt *a = user;

	(void)purpose;
	if (a->policy != NULL && !policy_address_allowed(a->policy, &addr->addr)) {
		a->denied = 1;
		return CURL_SOCKET_BAD;
	}
	return socket(addr->family, addr->socktype, addr->protocol);
}

static size_t
on_header(char *buf, size_t size, size_t n, void *user)
{
	struct attempt *a = user;
	size_t len = size * n;

	if (len > 12 && strncasecmp(buf, "Retry-After:", 12) == 0) {
		size_t k = len - 12 < sizeof a->retry_after - 1 ?
		    len - 12 : sizeof a->retry_after - 1;
		memcpy(a->retry_after, buf + 12, k);
		a->retry_after[k] = '\0';
		a->retry_after[strcspn(a->retry_after, "\r\n")] = '\0';
	}
	return len;
}

static size_t
on_body(char *buf, size_t size, size_t n, void *user)
{
	struct attempt *a = user;

	(void)buf;
	a->received += size * n;
	/* A receiver's answer is not read; a huge one is cut short. */
	return a->received > (1 << 20) ? 0 : size * n;
}

static int
on_progress(void *user, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	struct attempt *a = user;

	(void)dt, (void)dn, (void)ut, (void)un;
	return a->stop != NULL && *a->stop;
}

/* The secret's key, or NULL with out->last_error set (not to be sent).
 * Only a variable the policy lists, and only a whsec_ secret: a job can
 * neither probe the environment nor sign with another variable's value. */
static unsigned char *
secret_key(const struct job_callback *cb, const struct sd_policy *pol,
    size_t *keylen, int *bad, struct callback_outcome *out)
{
	const char *secret;
	unsigned char *key = NULL;

	*bad = 0;
	*keylen = 0;
	if (cb->secret_env == NULL)
		return NULL;
	if (pol != NULL && !policy_secret_allowed(pol, cb->secret_env)) {
		snprintf(out->last_error, sizeof out->last_error, "secret_env %.64s "
		    "is not among the configuration's secret_envs (policy."
		    "secret_envs); not sent", cb->secret_env);
		*bad = 1;
		return NULL;
	}
	secret = getenv(cb->secret_env);
	if (secret == NULL || *secret == '\0') {
		snprintf(out->last_error, sizeof out->last_error, "the secret's "
		    "environment variable %s is not set in the worker; not sent",
		    cb->secret_env);
		*bad = 1;
		return NULL;
	}
	if (strncmp(secret, "whsec_", 6) != 0 ||
	    (key = callback_secret_key(secret, keylen)) == NULL) {
		snprintf(out->last_error, sizeof out->last_error, "the secret "
		    "in %s is not of the form whsec_<base64>; not sent",
		    cb->secret_env);
		*bad = 1;
	}
	return key;
}

int
callback_attempt(const struct job_callback *cb, const struct sd_policy *pol,
    const char *event, const char *delivery_id, const char *body, size_t len,
    double timeout, const volatile sig_atomic_t *stop,
    struct callback_outcome *out, double *retry_after)
{
	unsigned char *key;
	size_t keylen = 0;
	char errbuf[CURL_ERROR_SIZE], line[512], *sig;
	struct curl_slist *h = NULL;
	long long ts = (long long)time(NULL);
	struct attempt a;
	long code = 0;
	CURLcode rc;
	CURL *curl;
	int bad, r = CALLBACK_RETRY;

	*retry_after = -1;
	snprintf(out->status, sizeof out->status, "failed");
	snprintf(out->delivery_id, sizeof out->delivery_id, "%s", delivery_id);
	if (pol != NULL && policy_check_url(pol, cb->url, line, sizeof line) < 0) {
		snprintf(out->last_error, sizeof out->last_error, "%.480s; not sent", line);
		return CALLBACK_GIVE_UP;
	}
	key = secret_key(cb, pol, &keylen, &bad, out);
	if (bad)
		return CALLBACK_GIVE_UP;
	if ((curl = curl_easy_init()) == NULL) {
		snprintf(out->last_error, sizeof out->last_error, "cannot start libcurl");
		free(key);
		return CALLBACK_RETRY;
	}
	if (timeout < 0.05)
		timeout = 0.05;
	memset(&a, 0, sizeof a);
	a.stop = stop;
	a.policy = pol;
	h = curl_slist_append(h, "Content-Type: application/json");
	snprintf(line, sizeof line, "webhook-id: %s", delivery_id);
	h = curl_slist_append(h, line);
	snprintf(line, sizeof line, "webhook-timestamp: %lld", ts);
	h = curl_slist_append(h, line);
	if (key != NULL) {
		sig = callback_signature(key, keylen, delivery_id, ts, body, len);
		snprintf(line, sizeof line, "webhook-signature: %s", sig ? sig : "");
		h = curl_slist_append(h, line);
		free(sig);
	}
	snprintf(line, sizeof line, "X-Sdbatch-Event: %s", event);
	h = curl_slist_append(h, line);
	h = curl_slist_append(h, "Expect:");
	errbuf[0] = '\0';
	curl_easy_setopt(curl, CURLOPT_URL, cb->url);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS, CURLPROTO_HTTP | CURLPROTO_HTTPS);
#endif
	curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_POST, 1L);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(curl, CURLOPT_USERAGENT, "sdbatch/" PACKAGE_VERSION);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout * 1000));
	curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(curl, CURLOPT_HEADERDATA, &a);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &a);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &a);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(curl, CURLOPT_OPENSOCKETFUNCTION, on_open);
	curl_easy_setopt(curl, CURLOPT_OPENSOCKETDATA, &a);
	rc = curl_easy_perform(curl);
	curl_slist_free_all(h);
	out->attempts++;
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
	out->http_status = (int)code;
	/* A 2xx is success whatever its body: a long answer is cut short
	 * (CURLE_WRITE_ERROR from on_body), not taken for a failure. */
	if ((rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && a.received > (1 << 20)))
	    && code >= 200 && code < 300) {
		snprintf(out->status, sizeof out->status, "delivered");
		out->last_error[0] = '\0';
		r = CALLBACK_DELIVERED;
	} else if (rc == CURLE_OK) {
		snprintf(out->last_error, sizeof out->last_error,
		    "HTTP %ld from the receiver", code);
		if (code == 410) {
			snprintf(out->last_error, sizeof out->last_error,
			    "HTTP 410 Gone: the receiver wants no more deliveries; "
			    "not retried");
			r = CALLBACK_GIVE_UP;
		}
	} else if (a.denied) {
		out->http_status = 0;
		snprintf(out->last_error, sizeof out->last_error, "the receiver's "
		    "address is loopback, link-local or private, which the "
		    "configuration does not allow (policy.callback_private); not sent");
		r = CALLBACK_GIVE_UP;
	} else {
		out->http_status = 0;
		snprintf(out->last_error, sizeof out->last_error, "%s",
		    errbuf[0] ? errbuf : curl_easy_strerror(rc));
		if (rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT)
			r = CALLBACK_GIVE_UP;
		else if (rc == CURLE_ABORTED_BY_CALLBACK) {
			snprintf(out->last_error, sizeof out->last_error,
			    "interrupted by a signal");
			r = CALLBACK_INTERRUPTED;
		}
	}
	if (a.retry_after[0] != '\0')
		*retry_after = callback_retry_after(a.retry_after, util_now());
	curl_easy_cleanup(curl);
	if (key != NULL) {
		OPENSSL_cleanse(key, keylen);
		free(key);
	}
	return r;
}

int
callback_deliver(const struct job_callback *cb, const struct callback_config *cfg,
    const char *event, const char *body, size_t len,
    const volatile sig_atomic_t *stop, struct callback_outcome *out)
{
	double start = util_now_mono();
	char id[64];
	int attempt, r;

	memset(out, 0, sizeof *out);
	snprintf(id, sizeof id, "msg_");
	util_random_hex(id + 4, 16);
	for (attempt = 1; attempt <= cfg->attempts; attempt++) {
		double left = cfg->total_s - (util_now_mono() - start), delay, ra;
		double timeout = cfg->timeout_s < left ? cfg->timeout_s : left;

		if (stop != NULL && *stop) {
			snprintf(out->last_error, sizeof out->last_error,
			    "interrupted by a signal after %d attempt%s", out->attempts,
			    out->attempts == 1 ? "" : "s");
			break;
		}
		r = callback_attempt(cb, cfg->policy, event, id, body, len, timeout,
		    stop, out, &ra);
		if (r != CALLBACK_RETRY)
			break;
		if (attempt == cfg->attempts)
			break;
		delay = ra >= 0 ? ra : callback_backoff(cfg, attempt);
		left = cfg->total_s - (util_now_mono() - start);
		if (delay >= left) {
			size_t n = strlen(out->last_error);
			snprintf(out->last_error + n, sizeof out->last_error - n,
			    "; gave up after %d attempt%s (total_time %g s)", attempt,
			    attempt == 1 ? "" : "s", cfg->total_s);
			break;
		}
		if (util_sleep(delay, stop, -1)) {
			size_t n = strlen(out->last_error);
			snprintf(out->last_error + n, sizeof out->last_error - n,
			    "; interrupted by a signal");
			break;
		}
	}
	return strcmp(out->status, "delivered") == 0 ? 0 : -1;
}
