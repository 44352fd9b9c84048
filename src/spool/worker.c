/* worker.c: the spool worker loop. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_SYS_INOTIFY_H
#include <sys/inotify.h>
#endif

#include "io/fileio.h"
#include "spool/callback.h"
#include "spool/outbox.h"
#include "spool/job.h"
#include "spool/result.h"
#include "spool/util.h"
#include "spool/worker.h"

/* The job being run, for worker_emergency_requeue (signal handler): every
 * path and text prepared beforehand, so that the handler only makes
 * async-signal-safe system calls. */
static char emergency_job[4096], emergency_to[4096], emergency_claim[4096];
static char emergency_own[4096], emergency_nonce[80];
static char emergency_state[4096], emergency_state_tmp[4096], emergency_text[512];
static volatile sig_atomic_t emergency_armed;

void
worker_emergency_requeue(void)
{
	char buf[4096];
	ssize_t n;
	size_t len;
	int fd;

	if (!emergency_armed)
		return;
	emergency_armed = 0;
	/* Only if the claim is still ours (else another worker runs it). */
	if (rename(emergency_claim, emergency_own) < 0)
		return;
	if ((fd = open(emergency_own, O_RDONLY | O_CLOEXEC)) < 0)
		return;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	if (strstr(buf, emergency_nonce) == NULL) {
		if (sd_rename_noreplace(AT_FDCWD, emergency_own, AT_FDCWD,
		    emergency_claim) < 0)
			unlink(emergency_own);
		return;
	}
	len = strlen(emergency_text);
	if ((fd = open(emergency_state_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0644)) >= 0) {
		if (write(fd, emergency_text, len) == (ssize_t)len && close(fd) == 0)
			rename(emergency_state_tmp, emergency_state);
		else
			unlink(emergency_state_tmp);
	}
	/* Never over a job queued under the same id meanwhile. */
	sd_rename_noreplace(AT_FDCWD, emergency_job, AT_FDCWD, emergency_to);
	unlink(emergency_own);
}

static void
arm_emergency(struct worker *w, const struct spool_claim *c)
{
	struct stat st;

	emergency_armed = 0;
	snprintf(emergency_job, sizeof emergency_job, "%s", c->job_path);
	snprintf(emergency_to, sizeof emergency_to, "%s/%s.yaml", w->spool.incoming,
	    c->id);
	snprintf(emergency_claim, sizeof emergency_claim, "%s", c->claim_path);
	snprintf(emergency_own, sizeof emergency_own, "%s/.%s.claim.own-signal",
	    w->spool.tmp, c->id);
	snprintf(emergency_nonce, sizeof emergency_nonce, "\"nonce\":\"%s\"",
	    c->nonce);
	snprintf(emergency_state, sizeof emergency_state, "%s/.%s.state",
	    w->spool.incoming, c->id);
	snprintf(emergency_state_tmp, sizeof emergency_state_tmp,
	    "%s/.%s.state.signal.tmp", w->spool.incoming, c->id);
	snprintf(emergency_text, sizeof emergency_text,
	    "{\"ino\":%llu,\"deaths\":%d,\"instance\":\"%s\",\"last_error\":"
	    "\"interrupted\"}", lstat(c->job_path, &st) == 0 ?
	    (unsigned long long)st.st_ino : 0ull, c->deaths, c->instance);
	emergency_armed = c->bad_name[0] == '\0';
}

static void
say(struct worker *w, int verbose_only, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
say(struct worker *w, int verbose_only, const char *fmt, ...)
{
	char buf[2048], safe[4 * 2048 + 8];
	va_list ap;

	if (w->quiet || (verbose_only && !w->verbose))
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	/* job values and file names never reach a terminal raw */
	fprintf(stderr, "sdbatch[%ld]: %s\n", (long)getpid(),
	    util_escape_controls(buf, safe, sizeof safe));
}

/* The heartbeat: touch the claim every heartbeat interval. */
struct heartbeat {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int stop, running;
	double interval;
	struct spool_claim *claim;
	int lost;
};

static void *
heartbeat_main(void *arg)
{
	struct heartbeat *h = arg;

	pthread_mutex_lock(&h->lock);
	while (!h->stop) {
		struct timespec ts;
		double when = util_now() + h->interval;
		ts.tv_sec = (time_t)when;
		ts.tv_nsec = (long)((when - (double)ts.tv_sec) * 1e9);
		pthread_cond_timedwait(&h->cond, &h->lock, &ts);
		if (h->stop)
			break;
		if (spool_heartbeat(h->claim) < 0) {
			/* Another worker took the claim over: stand down. */
			h->lost = 1;
			h->claim->lost = 1;
			break;
		}
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

static void
heartbeat_start(struct heartbeat *h, struct spool_claim *c, double interval)
{
	memset(h, 0, sizeof *h);
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
	h->interval = interval;
	h->claim = c;
	h->running = pthread_create(&h->thread, NULL, heartbeat_main, h) == 0;
}

static void
heartbeat_stop(struct heartbeat *h)
{
	if (h->running) {
		pthread_mutex_lock(&h->lock);
		h->stop = 1;
		pthread_cond_signal(&h->cond);
		pthread_mutex_unlock(&h->lock);
		pthread_join(h->thread, NULL);
	}
	pthread_mutex_destroy(&h->lock);
	pthread_cond_destroy(&h->cond);
}

static void
emit(struct worker *w, struct progress_sink *sink, const char *event,
    const char *id, const char *error, const char *path, int images, double elapsed)
{
	struct progress_event e;

	(void)w;
	progress_event_init(&e, event, id);
	e.error = error;
	e.path = path;
	e.images = images;
	e.elapsed_s = elapsed;
	progress_emit(sink, &e);
}

static void
notice(void *user, const char *message)
{
	say(user, 0, "job %s", message);
}

/* The outbox thread: delivers owed callbacks (of this worker's jobs and
 * of any other's) while jobs render. */
struct worker_outbox {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int stop, kicked, running;
	struct worker *w;
};

static void
outbox_report(void *user, const char *line)
{
	say(user, 0, "%s", line);
}

static void *
outbox_main(void *arg)
{
	struct worker_outbox *o = arg;
	struct worker *w = o->w;

	pthread_mutex_lock(&o->lock);
	while (!o->stop && !*w->stop) {
		struct timespec ts;
		double next = 3600, when;

		o->kicked = 0;
		pthread_mutex_unlock(&o->lock);
		outbox_run(&w->spool, &w->cfg->callback, w->stop, &next,
		    outbox_report, w);
		pthread_mutex_lock(&o->lock);
		if (o->stop || o->kicked)
			continue;
		/* Also look now and then for entries other workers left. */
		if (next > w->cfg->poll_s * 5)
			next = w->cfg->poll_s * 5;
		when = util_now() + (next > 0.05 ? next : 0.05);
		ts.tv_sec = (time_t)when;
		ts.tv_nsec = (long)((when - (double)ts.tv_sec) * 1e9);
		pthread_cond_timedwait(&o->cond, &o->lock, &ts);
	}
	pthread_mutex_unlock(&o->lock);
	return NULL;
}

static void
outbox_kick(struct worker *w)
{
	struct worker_outbox *o = w->outbox;

	if (o == NULL || !o->running)
		return;
	pthread_mutex_lock(&o->lock);
	o->kicked = 1;
	pthread_cond_signal(&o->cond);
	pthread_mutex_unlock(&o->lock);
}

static void
outbox_start(struct worker *w)
{
	struct worker_outbox *o = calloc(1, sizeof *o);

	w->outbox = o;
	if (o == NULL)
		return;
	o->w = w;
	pthread_mutex_init(&o->lock, NULL);
	pthread_cond_init(&o->cond, NULL);
	o->running = pthread_create(&o->thread, NULL, outbox_main, o) == 0;
}

static void
outbox_stop(struct worker *w)
{
	struct worker_outbox *o = w->outbox;

	if (o == NULL)
		return;
	if (o->running) {
		pthread_mutex_lock(&o->lock);
		o->stop = 1;
		pthread_cond_signal(&o->cond);
		pthread_mutex_unlock(&o->lock);
		pthread_join(o->thread, NULL);
	}
	pthread_mutex_destroy(&o->lock);
	pthread_cond_destroy(&o->cond);
	free(o);
	w->outbox = NULL;
}

/* --once: deliver what is owed before exiting (until delivered or given
 * up, or a signal). */
static void
outbox_drain(struct worker *w)
{
	double next;

	while (!*w->stop && outbox_run(&w->spool, &w->cfg->callback, w->stop,
	    &next, outbox_report, w) > 0)
		util_sleep(next > 0.02 ? next : 0.02, w->stop, -1);
}

/* Finish the job: its record, and the callback it owes (delivered from
 * the outbox once the record is on disk).  0 when finished; -1 when this
 * worker lost the claim (it stands down) or the record could not be
 * written (the job was requeued or failed, never left claimed). */
static int
finish(struct worker *w, struct spool_claim *c, json_t *record, int failed,
    const struct job_callback *cb, const char *event)
{
	struct sd_error err;
	size_t len, elen = 0;
	char *text, *entry = NULL;
	int r;

	sd_error_clear(&err);
	if (cb != NULL && cb->url != NULL &&
	    (entry = outbox_entry(record, c, event, failed, cb, &elen)) == NULL) {
		say(w, 0, "job %s: out of memory writing the result", c->id);
		return -1;
	}
	if ((text = result_text(record, &len)) == NULL) {
		free(entry);
		say(w, 0, "job %s: out of memory writing the result", c->id);
		return -1;
	}
	r = spool_finish(&w->spool, c, failed, text, len, entry, elen, &err);
	free(text);
	free(entry);
	if (r < 0) {
		say(w, 0, "%s", err.message);
		return -1;
	}
	if (elen > 0)
		outbox_kick(w);
	return 0;
}

/* The spool's owed_callback: the job.failed a job owes that goes to
 * failed/ without a result of this worker (its workers died, a cancel a
 * dead worker never saw, a record that could not be written). */
static char *
owed_failed_callback(void *user, const struct spool_claim *c,
    const char *job_path, json_t *record, size_t *len)
{
	struct worker *w = user;
	struct job_callback cb;
	size_t blen;
	char *buf, *entry = NULL;

	buf = util_read_file(job_path, w->cfg->limits.yaml.max_document, 1, &blen,
	    NULL);
	if (buf == NULL)
		return NULL;
	memset(&cb, 0, sizeof cb);
	if (job_parse_callback(buf, blen, w->cfg, &cb) == 0) {
		if (cb.url != NULL &&
		    (entry = outbox_entry(record, c, "job.failed", 1, &cb, len)) != NULL)
			w->owed = 1;
		job_callback_free(&cb);
	}
	free(buf);
	return entry;
}

/* A job that could not run (bad name, unreadable, invalid). */
static void
reject(struct worker *w, struct spool_claim *c, struct progress_sink *sink,
    struct sd_job *job, const struct sd_error *err, int line, const char *buf,
    size_t len)
{
	struct job_callback cb;
	json_t *rec = result_rejected(c->id, job, err, line);
	int have_cb = 0;

	memset(&cb, 0, sizeof cb);
	if (job != NULL && job->callback.url != NULL)
		cb = job->callback, have_cb = 2;
	else if (buf != NULL && job_parse_callback(buf, len, w->cfg, &cb) == 0)
		have_cb = 1;
	say(w, 0, "job %s rejected: %s", c->id, err->message);
	emit(w, sink, "failed", c->id, err->message, NULL, -1, -1);
	if (rec != NULL)
		finish(w, c, rec, 1, have_cb ? &cb : NULL, "job.failed");
	else
		spool_finish(&w->spool, c, 1, "{}\n", 3, NULL, 0, NULL);
	json_decref(rec);
	if (have_cb == 1)
		job_callback_free(&cb);
}

/* Count a failed job; the first one's status is what `watch --once` exits
 * with. */
static void
job_failed(struct worker *w, int code)
{
	w->failed++;
	if (w->failed_status == 0)
		w->failed_status = code != 0 && code != SD_EREQUEUED ? code : SD_EINTERNAL;
}

int
worker_process(struct worker *w, struct spool_claim *c)
{
	struct progress_sink sink;
	struct heartbeat hb;
	struct sd_job job;
	struct sd_error err;
	struct runjob_result res;
	struct runjob_env env;
	char *log, *buf = NULL, *outroot = NULL, display[600];
	size_t len = 0;
	int line = 0, status = 0, hb_stopped = 0;
	json_t *rec;

	progress_sink_init(&sink);
	sink.json_fd = w->json_fd;
	log = util_printf("%s/%s.jsonl", w->spool.logs, c->id);
	if (log != NULL && progress_sink_open_log(&sink, log) < 0)
		say(w, 0, "%s: cannot write the progress log: %s", log, strerror(errno));
	free(log);
	emit(w, &sink, "claimed", c->id, NULL, NULL, -1, -1);
	say(w, 1, "job %s claimed", c->id);
	memset(&hb, 0, sizeof hb);
	hb_stopped = 1;		/* started once the job is parsed */
	arm_emergency(w, c);
	sd_error_clear(&err);
	job_init(&job, w->cfg);
	snprintf(display, sizeof display, "%s", c->name);
	if (c->bad_name[0] != '\0') {
		sd_fail(&err, SD_EDATA, "%s", c->bad_name);
		snprintf(err.field, sizeof err.field, "id");
		reject(w, c, &sink, NULL, &err, 0, NULL, 0);
		job_failed(w, err.code);
		goto out;
	}
	buf = util_read_file(c->job_path, w->cfg->limits.yaml.max_document, 1, &len, &err);
	if (buf == NULL) {
		if (err.code == SD_EDATA || err.code == SD_ENOINPUT) {
			char m[SD_ERROR_MAX];
			snprintf(m, sizeof m, "%s", err.message);
			sd_fail(&err, SD_EDATA, "%s: %s", display,
			    strstr(m, ": ") ? strstr(m, ": ") + 2 : m);
		}
		reject(w, c, &sink, NULL, &err, 0, NULL, 0);
		job_failed(w, err.code);
		goto out;
	}
	if (job_parse(&job, w->cfg, buf, len, display, w->spool.running, c->id,
	    &err, &line) < 0) {
		reject(w, c, &sink, &job, &err, line, buf, len);
		job_failed(w, err.code);
		goto out;
	}
	memset(&env, 0, sizeof env);
	env.cfg = w->cfg;
	env.cache = &w->cache;
	env.sink = &sink;
	env.stop = w->stop;
	env.claim = c;
	env.notice = notice;
	env.notice_user = w;
	outroot = strdup(w->cfg->output_root ? w->cfg->output_root : w->spool.output);
	env.output_root = outroot;
	env.default_dir = c->id;
	heartbeat_start(&hb, c, w->cfg->heartbeat_s);
	hb_stopped = 0;
	runjob_run(&env, &job, &res);
	if (c->lost || !spool_claim_held(c)) {
		/* Another worker took the claim over while this one was
		 * paused: it runs the job now; touch nothing. */
		c->lost = 1;
		heartbeat_stop(&hb);
		emergency_armed = 0;
		say(w, 0, "job %s: another worker took the claim over (this one "
		    "was paused or cut off longer than stale_after); standing "
		    "down", c->id);
		runjob_result_free(&res);
		hb_stopped = 1;
		goto done;
	}
	if (res.status == RUNJOB_INTERRUPTED) {
		heartbeat_stop(&hb);
		hb_stopped = 1;
		emergency_armed = 0;
		if (spool_requeue(&w->spool, c, &err) < 0) {
			say(w, 0, "%s", err.message);
		} else {
			emit(w, &sink, "requeued", c->id, "interrupted by a signal",
			    NULL, -1, res.total_s);
			say(w, 0, "job %s interrupted and requeued", c->id);
			w->requeued++;
		}
		runjob_result_free(&res);
		status = SD_EREQUEUED;
		goto done;
	}
	rec = result_record(c->id, &job, &res);
	if (rec == NULL) {
		say(w, 0, "job %s: out of memory", c->id);
		runjob_result_free(&res);
		goto out;
	}
	/* The heartbeat stops before the finish, which takes the claim. */
	heartbeat_stop(&hb);
	hb_stopped = 1;
	if (res.status == RUNJOB_DONE) {
		if (finish(w, c, rec, 0, &job.callback, "job.done") == 0) {
			emit(w, &sink, "done", c->id, NULL, NULL, res.nimages,
			    res.total_s);
			say(w, 0, "job %s done: %d image%s in %.2f s", c->id,
			    res.nimages, res.nimages == 1 ? "" : "s", res.total_s);
			w->done++;
		}
	} else if (res.status == RUNJOB_CANCELLED) {
		if (finish(w, c, rec, 1, &job.callback, "job.failed") == 0) {
			emit(w, &sink, "cancelled", c->id, "cancelled", NULL,
			    res.nimages, res.total_s);
			say(w, 0, "job %s cancelled", c->id);
			w->failed++;
		}
	} else {
		if (finish(w, c, rec, 1, &job.callback, "job.failed") == 0) {
			emit(w, &sink, "failed", c->id, res.err.message, NULL,
			    res.nimages, res.total_s);
			say(w, 0, "job %s failed: %s", c->id, res.err.message);
			job_failed(w, res.err.code);
		}
	}
	json_decref(rec);
	runjob_result_free(&res);
out:
	if (!hb_stopped)
		heartbeat_stop(&hb);
	emergency_armed = 0;
done:
	progress_sink_close(&sink);
	job_free(&job);
	free(buf);
	free(outroot);
	return status;
}

static void
drain(int fd)
{
	char buf[4096];

	while (fd >= 0 && read(fd, buf, sizeof buf) > 0)
		;
}

/* Wait for a new job, a signal or the poll interval. */
static void
wait_for_work(struct worker *w, double seconds)
{
	struct pollfd pfd[2];
	int n = 0;

	if (w->inotify_fd >= 0) {
		pfd[n].fd = w->inotify_fd;
		pfd[n++].events = POLLIN;
	}
	if (w->wake_fd >= 0) {
		pfd[n].fd = w->wake_fd;
		pfd[n++].events = POLLIN;
	}
	if (*w->stop || (w->reload && *w->reload))
		return;
	if (poll(pfd, (nfds_t)n, (int)(seconds * 1000)) > 0) {
		drain(w->inotify_fd);
		drain(w->wake_fd);
	}
}

int
worker_run(struct worker *w, struct sd_error *err)
{
	double last_recover = -1e9;
	int status = 0;

	w->inotify_fd = -1;
	w->outbox = NULL;
	memset(&w->cache, 0, sizeof w->cache);
	if (spool_open(&w->spool, w->spool_dir, 1, err) < 0)
		return err->code ? err->code : SD_EIO;
	w->spool.max_deaths = w->cfg->max_deaths;
	w->spool.owed_callback = owed_failed_callback;
	w->spool.owed_callback_user = w;
	/* Known before any thread starts. */
	(void)util_boot_id();
	(void)util_pid_ns();
	(void)util_hostname();
	if (!w->once)
		outbox_start(w);
#ifdef HAVE_SYS_INOTIFY_H
	w->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->inotify_fd >= 0 && inotify_add_watch(w->inotify_fd, w->spool.incoming,
	    IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE | IN_ATTRIB) < 0) {
		close(w->inotify_fd);
		w->inotify_fd = -1;
	}
#endif
	say(w, 1, "watching %s (%s, polling every %g s)", w->spool_dir,
	    w->inotify_fd >= 0 ? "inotify" : "no inotify",
	    w->poll_s > 0 ? w->poll_s : w->cfg->poll_s);
	while (!*w->stop) {
		struct spool_claim c;
		double poll_s = w->poll_s > 0 ? w->poll_s : w->cfg->poll_s;
		int r, n = 0;

		if (w->reload != NULL && *w->reload) {
			struct sd_error e;
			*w->reload = 0;
			sd_error_clear(&e);
			if (w->reload_config == NULL)
				;
			else if (w->reload_config(w->reload_user, &e) < 0)
				say(w, 0, "configuration not reloaded: %s", e.message);
			else {
				say(w, 0, "configuration reloaded");
				w->spool.max_deaths = w->cfg->max_deaths;
				/* A new device or model settings: reload. */
				model_cache_free(&w->cache);
			}
		}
		if (util_now_mono() - last_recover >= poll_s || w->once) {
			last_recover = util_now_mono();
			if (spool_recover(&w->spool, w->cfg->stale_s, &n, err) < 0)
				say(w, 0, "%s", err->message);
			if (n > 0)
				say(w, 0, "requeued %d stale job%s", n, n == 1 ? "" : "s");
			/* a job failed by recovery may owe a callback */
			if (w->owed) {
				w->owed = 0;
				outbox_kick(w);
			}
		}
		r = spool_claim_next(&w->spool, &c, err);
		if (r < 0) {
			say(w, 0, "%s", err->message);
			if (w->once) {
				status = err->code ? err->code : SD_EIO;
				break;
			}
			wait_for_work(w, poll_s);
			continue;
		}
		if (r == 1) {
			r = worker_process(w, &c);
			spool_claim_free(&c);
			if (r == SD_EREQUEUED) {
				status = SD_EREQUEUED;
				break;
			}
			continue;
		}
		if (w->once)
			break;
		wait_for_work(w, poll_s);
	}
	outbox_stop(w);
	if (w->once && status == 0)
		outbox_drain(w);
	say(w, 1, "stopping: %d done, %d failed, %d requeued", w->done, w->failed,
	    w->requeued);
	model_cache_free(&w->cache);
	if (w->inotify_fd >= 0)
		close(w->inotify_fd);
	spool_close(&w->spool);
	return status;
}
