/* spool.h: the spool folder, its states and the claims on its jobs.
 *
 *   SPOOL/tmp/        staging: files are written here, then renamed
 *   SPOOL/incoming/   queued jobs (*.yaml, *.yml; anything else is ignored)
 *   SPOOL/running/    claimed jobs: ID.yaml, ID.claim (owner, heartbeat by
 *                     mtime) and ID.cancel (a cancel request)
 *   SPOOL/done/       ID.yaml and ID.json (the result record)
 *   SPOOL/failed/     ID.yaml and ID.json (with "error")
 *   SPOOL/output/ID/  PNGs (unless the configuration sets another root)
 *   SPOOL/logs/ID.jsonl  progress log
 *   SPOOL/callbacks/  ID.json: a callback owed by a finished job, until
 *                     delivered (or given up) by any worker
 *
 * Every change of a job's state is one rename(2) of its job file, so that a
 * crash at any point loses nothing: a claim is a rename from incoming/ to
 * running/ (exactly one worker wins), a finish a rename from running/ to
 * done/ or failed/, a requeue a rename back to incoming/.  Stale claims
 * (the owner died) are found by the owner's pid on the same host and by
 * the heartbeat's age across hosts, and requeued. */
#ifndef SD_SPOOL_SPOOL_H
#define SD_SPOOL_SPOOL_H

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

#include "core/error.h"

struct spool_claim;

struct spool {
	char *root;
	char *tmp, *incoming, *running, *done, *failed, *output, *logs;
	char *callbacks;	/* owed callbacks (made when first needed) */
	/* A job whose worker died this many times (or whose result could
	 * not be written this many times) goes to failed/ instead of being
	 * run again (the configuration's max_worker_deaths; 2 by default). */
	int max_deaths;
	/* Called as a claimed job goes to failed/ without a worker's result
	 * (worker deaths, a cancel its dead worker never saw, a record that
	 * could not be written): c the claim (id, instance), job_path the job
	 * file, record its result record.  Returns the outbox entry the job
	 * owes (callbacks/ID.json, written before the job file moves), or
	 * NULL for none; *len its length.  NULL: no callbacks (the worker
	 * sets it). */
	char *(*owed_callback)(void *user, const struct spool_claim *c,
	    const char *job_path, json_t *record, size_t *len);
	void *owed_callback_user;
};

/* Open (and, with create, make the missing folders of) the spool at root.
 * Errors: SD_ENOINPUT (no such spool), SD_EIO. */
int spool_open(struct spool *s, const char *root, int create,
    struct sd_error *err);
void spool_close(struct spool *s);

struct spool_claim {
	char id[129];		/* the job id (a safe one for a bad name) */
	char *name;		/* the file name it had in incoming/ */
	char *job_path;		/* running/ID.yaml */
	char *claim_path;	/* running/ID.claim */
	char *cancel_path;	/* running/ID.cancel */
	char bad_name[512];	/* why the name is not a job id, or "" */
	char nonce[33];
	double started;		/* epoch seconds */
	int deaths;		/* workers that died running this job before */
	char instance[33];	/* the same for every run of this queued job */
	char *own_path;		/* the claim, taken away while finishing */
	/* Set (by the heartbeat, or a finish) when another worker took the
	 * claim over: every later step stands down. */
	volatile sig_atomic_t lost;
};

/* Claim the oldest job of incoming/.  Returns 1 with c filled, 0 when
 * nothing is queued, -1 on error.  A file whose name is not a valid job id
 * is claimed under a safe name with c->bad_name set: the caller fails it. */
int spool_claim_next(struct spool *s, struct spool_claim *c,
    struct sd_error *err);
/* Claim one named job (tests, `run`); same results. */
int spool_claim_id(struct spool *s, const char *id, struct spool_claim *c,
    struct sd_error *err);
void spool_claim_free(struct spool_claim *c);

/* Touch the claim (the heartbeat), if it is still ours (its nonce).
 * Returns -1 when it is gone or another worker's (taken over). */
int spool_heartbeat(const struct spool_claim *c);

/* Is the claim still ours (running/ID.claim holds our nonce)?  1 or 0. */
int spool_claim_held(const struct spool_claim *c);

/* Has someone asked to cancel this claimed job? */
int spool_cancel_requested(const struct spool_claim *c);

/* Move the job back to incoming/ and drop the claim, if the claim is
 * still ours (else -1, SD_EREQUEUED, c->lost set, nothing touched).  Never
 * replaces a job queued under the same id meanwhile: then this one goes
 * to failed/ with the reason (-1, SD_EDATA). */
int spool_requeue(struct spool *s, struct spool_claim *c, struct sd_error *err);

/* Finish a claimed job, if the claim is still ours (else -1, SD_EREQUEUED,
 * c->lost set, nothing touched): write the result record (record: JSON
 * text) to done/ or failed/ (failed nonzero), then the owed callback
 * (cbentry, JSON text, or NULL: see spool_callback_*), then move the job
 * file there and drop the claim.  When the record or the callback cannot
 * be written (a full disk), the job is requeued (or, after max_deaths such
 * failures, failed with the reason), never left claimed: -1, SD_EIO. */
int spool_finish(struct spool *s, struct spool_claim *c, int failed,
    const char *record, size_t len, const char *cbentry, size_t cblen,
    struct sd_error *err);

/* Requeue stale claims: same host, boot and PID namespace and the owner's
 * pid is dead (or was reused), or else the heartbeat is older than
 * stale_s.  A job whose workers died max_deaths times goes to failed/.  A
 * stale job with a cancel request goes to failed/ as cancelled.  Also
 * removes leftovers (old temporary files, orphaned markers).  *requeued
 * (when not NULL) gets the number of jobs put back. */
int spool_recover(struct spool *s, double stale_s, int *requeued,
    struct sd_error *err);

/* SPOOL/callbacks/ID.json: the callback a finished job owes (malloc'd). */
char *spool_callback_path(struct spool *s, const char *id);

/* Enqueue data as job id (staged in tmp/, then linked into incoming/
 * without replacing anything).  Fails (SD_EDATA) when the id is queued,
 * running or finished already. */
int spool_submit(struct spool *s, const char *id, const char *data, size_t len,
    struct sd_error *err);

enum spool_state {
	SPOOL_NONE, SPOOL_QUEUED, SPOOL_RUNNING, SPOOL_DONE, SPOOL_FAILED
};
const char *spool_state_name(enum spool_state st);

/* Where the job id is now (SPOOL_NONE when nowhere). */
enum spool_state spool_find(struct spool *s, const char *id, char **path);

/* Cancel id: a queued job goes to failed/ with a "cancelled" record; a
 * running one gets a cancel request (it stops at its next step).  *state
 * gets the state the job was found in.  Fails with SD_ENOINPUT when there
 * is no such job and SD_EDATA when it has finished already. */
int spool_cancel(struct spool *s, const char *id, enum spool_state *state,
    struct sd_error *err);

/* Run a failed (or cancelled) job again under its id: its record moves to
 * failed/.history/ID-TIME.json (kept), its job file back to incoming/
 * (never over a job queued under the id).  Errors: SD_ENOINPUT (no such
 * job), SD_EDATA (the job is queued, running or done). */
int spool_retry(struct spool *s, const char *id, struct sd_error *err);

/* One job of the listing. */
struct spool_entry {
	char id[129];
	enum spool_state state;
	double mtime;		/* of the job file: queued/finished time */
	json_t *claim;		/* running: the claim (host, pid, started) */
	json_t *progress;	/* running: the last progress event, or NULL */
	json_t *record;		/* done/failed: the result record, or NULL */
};

/* All jobs (or only id when not NULL), ordered by state then time.
 * Returns the number of entries (*out malloc'd), or -1. */
int spool_list(struct spool *s, const char *id, struct spool_entry **out,
    struct sd_error *err);
void spool_list_free(struct spool_entry *e, int n);

/* The last JSON line of a progress log, or NULL. */
json_t *spool_last_event(const char *log_path);

/* A minimal result record for a job that never ran (cancelled while
 * queued, rejected by name): id, status, error, worker.  Cancelled while
 * queued (status "cancelled", code 0): worker null, an error without a
 * code. */
json_t *spool_simple_record(const char *id, const char *status, int code,
    const char *message);

#endif
