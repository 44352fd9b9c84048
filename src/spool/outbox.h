/* outbox.h: the callbacks that finished jobs owe, kept in the spool
 * (SPOOL/callbacks/ID.json) until delivered or given up, so that a signal,
 * a crash or a dead receiver loses none and holds up no rendering.
 *
 * A finished job's entry is written with its record, before the job file
 * moves to done/ or failed/ (spool_finish).  Any worker delivers due
 * entries: it takes one by renaming it to a lease (.ID.json.lease-HEX; a
 * lease older than a few timeouts is a dead deliverer's and goes back),
 * makes one attempt, then writes the outcome into the result record and
 * drops the entry, or puts it back with its next attempt's time (backoff
 * with jitter, or the receiver's Retry-After).  The webhook-id is fixed per
 * job and event ("msg_" and 32 hex digits of SHA-256 of
 * the job instance and event), the same on every attempt, by
 * every worker, and when the job was rerun after a crash: receivers
 * deduplicate on it. */
#ifndef SD_SPOOL_OUTBOX_H
#define SD_SPOOL_OUTBOX_H

#include <signal.h>
#include <stddef.h>

#include <jansson.h>

#include "spool/conf.h"
#include "spool/job.h"
#include "spool/spool.h"

/* The webhook-id of a job's event ("job.done", "job.failed"). */
void outbox_delivery_id(const char *instance, const char *event, char out[64]);

/* The entry a job owes (malloc'd JSON text), and the record's callback
 * set to pending with its webhook-id.  failed: the record goes to
 * failed/.  NULL when out of memory. */
char *outbox_entry(json_t *record, const struct spool_claim *c,
    const char *event, int failed, const struct job_callback *cb, size_t *len);

/* One pass over SPOOL/callbacks/: an attempt for each due entry.
 * Returns the number of entries still owed (due later or leased by
 * another worker); *next (when not NULL) gets the seconds until the
 * earliest is due.  report (or NULL) gets a line per outcome. */
int outbox_run(struct spool *s, const struct callback_config *cfg,
    const volatile sig_atomic_t *stop, double *next,
    void (*report)(void *user, const char *line), void *user);

#endif
