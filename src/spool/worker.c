/* worker.c: the spool worker loop. */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_SYS_INOTIFY_H
#include <sys/inotify.h>
#endif

#include "spool/callback.h"
#include "spool/job.h"
#include "spool/result.h"
#include "spool/util.h"
#include "spool/worker.h"

/* The job being run, for worker_emergency_requeue (signal handler). */
static char emergency_job[4096], emergency_to[4096], emergency_claim[4096];
static volatile sig_atomic_t emergency_armed;

void
worker_emergency_requeue(void)
{
	if (!emergency_armed)
		return;
	emergency_armed = 0;
	if (rename(emergency_job, emergency_to) == 0)
		unlink(emergency_claim);
}

static void
arm_emergency(struct worker *w, const struct spool_claim *c)
{
	emergency_armed = 0;
	snprintf(emergency_job, sizeof emergency_job, "%s", c->job_path);
	snprintf(emergency_to, sizeof emergency_to, "%s/%s.yaml", w->spool.incoming,
	    c->id);
	snprintf(emergency_claim, sizeof emergency_claim, "%s", c->claim_path);
	emergency_armed = c->bad_name[0] == '\0';
}

static void
say(struct worker *w, int verbose_only, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
say(struct worker *w, int verbose_only, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;

	if (w->quiet || (verbose_only && !w->verbose))
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	fprintf(stderr, "sdbatch[%ld]: %s\n", (long)getpid(), buf);
}

/* The heartbeat: touch the claim every heartbeat interval. */
struct heartbeat {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int stop, running;
	double interval;
	const struct spool_claim *claim;
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
		if (spool_heartbeat(h->claim) < 0)
			h->lost = 1;
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

static void
heartbeat_start(struct heartbeat *h, const struct spool_claim *c, double interval)
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

/* Send the callback (if any), record its outcome, finish the job. */
static void
finish(struct worker *w, struct spool_claim *c, json_t *record, int failed,
    const struct job_callback *cb, const char *event)
{
	struct sd_error err;
	size_t len;
	char *text;

	sd_error_clear(&err);
	if (cb != NULL && cb->url != NULL) {
		struct callback_outcome o;
		size_t blen = 0;
		char *body = result_callback_body(record, cb->include_images, &blen);
		if (body != NULL) {
			callback_deliver(cb, &w->cfg->callback, event, body, blen,
			    w->stop, &o);
			free(body);
		} else {
			memset(&o, 0, sizeof o);
			snprintf(o.status, sizeof o.status, "failed");
			snprintf(o.last_error, sizeof o.last_error, "out of memory");
		}
		result_set_callback(record, &o);
		if (strcmp(o.status, "delivered") == 0)
			say(w, 1, "job %s: callback delivered (%d attempts)", c->id,
			    o.attempts);
		else
			say(w, 0, "job %s: callback failed after %d attempts: %s", c->id,
			    o.attempts, o.last_error);
	}
	if ((text = result_text(record, &len)) == NULL) {
		say(w, 0, "job %s: out of memory writing the result", c->id);
		return;
	}
	if (spool_finish(&w->spool, c, failed, text, len, &err) < 0)
		say(w, 0, "job %s: %s", c->id, err.message);
	free(text);
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
		spool_finish(&w->spool, c, 1, "{}\n", 3, NULL);
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
	int line = 0, status = 0;
	json_t *rec;

	progress_sink_init(&sink);
	sink.json_fd = w->json_fd;
	log = util_printf("%s/%s.jsonl", w->spool.logs, c->id);
	if (log != NULL && progress_sink_open_log(&sink, log) < 0)
		say(w, 0, "%s: cannot write the progress log: %s", log, strerror(errno));
	free(log);
	emit(w, &sink, "claimed", c->id, NULL, NULL, -1, -1);
	say(w, 1, "job %s claimed", c->id);
	heartbeat_start(&hb, c, w->cfg->heartbeat_s);
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
	runjob_run(&env, &job, &res);
	if (res.status == RUNJOB_INTERRUPTED) {
		heartbeat_stop(&hb);
		emergency_armed = 0;
		if (spool_requeue(&w->spool, c, &err) < 0)
			say(w, 0, "job %s: %s", c->id, err.message);
		emit(w, &sink, "requeued", c->id, "interrupted by a signal", NULL, -1,
		    res.total_s);
		say(w, 0, "job %s interrupted and requeued", c->id);
		w->requeued++;
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
	if (res.status == RUNJOB_DONE) {
		finish(w, c, rec, 0, &job.callback, "job.done");
		emit(w, &sink, "done", c->id, NULL, NULL, res.nimages, res.total_s);
		say(w, 0, "job %s done: %d image%s in %.2f s", c->id, res.nimages,
		    res.nimages == 1 ? "" : "s", res.total_s);
		w->done++;
	} else if (res.status == RUNJOB_CANCELLED) {
		finish(w, c, rec, 1, &job.callback, "job.failed");
		emit(w, &sink, "cancelled", c->id, "cancelled", NULL, res.nimages,
		    res.total_s);
		say(w, 0, "job %s cancelled", c->id);
		w->failed++;
	} else {
		finish(w, c, rec, 1, &job.callback, "job.failed");
		emit(w, &sink, "failed", c->id, res.err.message, NULL, res.nimages,
		    res.total_s);
		say(w, 0, "job %s failed: %s", c->id, res.err.message);
		job_failed(w, res.err.code);
	}
	json_decref(rec);
	runjob_result_free(&res);
out:
	heartbeat_stop(&hb);
	emergency_armed = 0;
done:
	if (hb.lost)
		say(w, 0, "job %s: the claim was taken over by another worker while "
		    "it ran (heartbeat older than stale_after?)", c->id);
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
	memset(&w->cache, 0, sizeof w->cache);
	if (spool_open(&w->spool, w->spool_dir, 1, err) < 0)
		return err->code ? err->code : SD_EIO;
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
	say(w, 1, "stopping: %d done, %d failed, %d requeued", w->done, w->failed,
	    w->requeued);
	model_cache_free(&w->cache);
	if (w->inotify_fd >= 0)
		close(w->inotify_fd);
	spool_close(&w->spool);
	return status;
}
