/* callback.h: the HTTP callback when a job ends (see SPEC.md "Callback").
 *
 * The result record is POSTed as JSON, signed the Standard Webhooks way:
 * webhook-id (one per job event, the same on every retry), webhook-timestamp
 * (Unix seconds of this attempt) and, when the job names a secret,
 * webhook-signature "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>" with
 * key the base64 part of the secret "whsec_<base64>".  X-Sdbatch-Event says
 * job.done or job.failed.  2xx is success, 410 stops, anything else (and a
 * timeout) is retried with exponential backoff and jitter, honouring
 * Retry-After, within the configured attempts and total time.  The secret
 * is read from the environment and never written anywhere. */
#ifndef SD_SPOOL_CALLBACK_H
#define SD_SPOOL_CALLBACK_H

#include <signal.h>
#include <stddef.h>

#include "spool/conf.h"
#include "spool/job.h"

struct callback_outcome {
	char status[16];	/* "delivered" or "failed" */
	int attempts;
	int http_status;	/* of the last attempt, 0 when none */
	char last_error[512];	/* "" when delivered */
	char delivery_id[64];	/* the webhook-id */
};

/* Initialise libcurl (once per process, before threads). */
int callback_global_init(void);

/* Deliver body (event "job.done" or "job.failed") now, retrying in
 * place (`sdbatch run`; the worker uses the outbox, spool/outbox.h).
 * Gives up early when *stop becomes nonzero.  Always fills out; returns 0 when delivered, -1
 * otherwise. */
int callback_deliver(const struct job_callback *cb,
    const struct callback_config *cfg, const char *event, const char *body,
    size_t len, const volatile sig_atomic_t *stop, struct callback_outcome *out);

/* What one attempt came to. */
enum {
	CALLBACK_DELIVERED,	/* a 2xx (its body is not read) */
	CALLBACK_RETRY,		/* worth another attempt later */
	CALLBACK_GIVE_UP,	/* 410, a bad URL, a missing secret: never */
	CALLBACK_INTERRUPTED	/* *stop became nonzero */
};

/* One POST of body with webhook-id delivery_id, within timeout seconds,
 * if the policy (NULL: none) allows the URL, the secret and the address
 * connected to (else CALLBACK_GIVE_UP with the reason).
 * Updates out (status, attempts + 1, http_status, last_error);
 * *retry_after gets the receiver's Retry-After in seconds, or -1. */
int callback_attempt(const struct job_callback *cb, const struct sd_policy *pol,
    const char *event, const char *delivery_id, const char *body, size_t len,
    double timeout, const volatile sig_atomic_t *stop,
    struct callback_outcome *out, double *retry_after);

/* "v1,<base64 HMAC-SHA256(key, id "." timestamp "." body)>" (malloc'd). */
char *callback_signature(const unsigned char *key, size_t keylen,
    const char *id, long long timestamp, const char *body, size_t len);

/* The key of a secret "whsec_<base64>" (the prefix is optional); NULL when
 * it is not valid base64 or empty. */
unsigned char *callback_secret_key(const char *secret, size_t *keylen);

/* A Retry-After value (delay seconds or an HTTP date) as a delay from now;
 * -1 when it cannot be read. */
double callback_retry_after(const char *value, double now);

/* The delay before retry number attempt (1 = after the first failure):
 * backoff * 2^(attempt-1), capped at backoff_max, times a random factor
 * in [0.5, 1.5). */
double callback_backoff(const struct callback_config *cfg, int attempt);

#endif
