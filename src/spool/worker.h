/* worker.h: the spool worker (`sdbatch watch`): claim, run, record,
 * call back, repeat.
 *
 * New jobs are noticed by inotify where the file system supports it and by
 * polling (every poll interval) always, as a safety net and for NFS.
 * Stale claims of dead workers are requeued before each claim.  A loaded
 * model is kept while consecutive jobs use the same files. */
#ifndef SD_SPOOL_WORKER_H
#define SD_SPOOL_WORKER_H

#include <signal.h>

#include "core/error.h"
#include "spool/conf.h"
#include "spool/runjob.h"
#include "spool/spool.h"

struct worker {
	/* set by the caller */
	const char *spool_dir;
	struct sd_config *cfg;		/* replaced in place by reload */
	int once;			/* run what is queued, then return */
	double poll_s;			/* 0: the configuration's */
	int verbose, quiet;
	int json_fd;			/* progress events also here, or -1 */
	/* Signals: *stop counts SIGTERM/SIGINT, *reload is set by SIGHUP
	 * (cleared here); wake_fd becomes readable on a signal (or -1). */
	volatile sig_atomic_t *stop;
	volatile sig_atomic_t *reload;
	int wake_fd;
	/* Re-read the configuration into cfg (SIGHUP). */
	int (*reload_config)(void *user, struct sd_error *err);
	void *reload_user;
	/* counters */
	int done, failed, requeued;
	/* The exit status of the first job that failed (65 bad job data, 66 a
	 * missing input, 70, 74, ...; not a cancelled one), or 0. */
	int failed_status;
	/* internal */
	struct spool spool;
	struct model_cache cache;
	int inotify_fd;
	struct worker_outbox *outbox;	/* the callback delivery thread */
	int owed;			/* recovery failed a job owing a callback */
};

/* Run until *stop (or, with once, until nothing is queued).  Returns the
 * exit status: 0, 75 when a job was interrupted and requeued, or another
 * status of SPEC.md with err filled when the spool cannot be used. */
int worker_run(struct worker *w, struct sd_error *err);

/* From a signal handler (async-signal-safe): put the running job back to
 * incoming/ and drop its claim, before exiting at once on a second signal. */
void worker_emergency_requeue(void);

/* Run one job file that the caller claimed (c): parse, render, record,
 * call back, move to done/ or failed/.  Returns 0, or 75 when interrupted
 * and requeued. */
int worker_process(struct worker *w, struct spool_claim *c);

#endif
