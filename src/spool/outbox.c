/* outbox.c: owed callbacks in SPOOL/callbacks/, delivered by any worker. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fileio.h"
#include "spool/callback.h"
#include "spool/outbox.h"
#include "spool/result.h"
#include "spool/util.h"

void
outbox_delivery_id(const char *instance, const char *event, char out[64])
{
	char text[128], hex[65];

	/* Hex like the random ids of `run`'s callbacks. */
	snprintf(text, sizeof text, "%s %s", instance, event);
	util_sha256_hex(text, strlen(text), hex);
	snprintf(out, 64, "msg_%.32s", hex);
}

char *
outbox_entry(json_t *record, const struct spool_claim *c, const char *event,
    int failed, const struct job_callback *cb, size_t *len)
{
	char id[64], *text;
	json_t *o;

	outbox_delivery_id(c->instance, event, id);
	json_object_set_new(record, "callback", json_pack("{s:s, s:i, s:s}",
	    "status", "pending", "attempts", 0, "delivery_id", id));
	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s?, s:b, s:f, s:i, s:f}",
	    "id", c->id, "event", event, "delivery_id", id,
	    "state", failed ? "failed" : "done", "url", cb->url,
	    "secret_env", cb->secret_env, "include_images", cb->include_images,
	    "created", util_now(), "attempts", 0, "next", 0.0);
	if (o == NULL)
		return NULL;
	text = json_dumps(o, SD_JSON_LINE);
	json_decref(o);
	if (text != NULL)
		*len = strlen(text);
	return text;
}

static json_t *
read_json(const char *path)
{
	size_t len;
	char *buf = util_read_file(path, 1 << 24, 1, &len, NULL);
	json_t *j;

	if (buf == NULL)
		return NULL;
	j = json_loadb(buf, len, 0, NULL);
	free(buf);
	return j;
}

static int
write_json(const char *path, json_t *o, size_t flags)
{
	char *text = json_dumps(o, flags);
	int r;

	if (text == NULL)
		return -1;
	if (flags & JSON_INDENT(2)) {
		size_t n = strlen(text);
		char *t = realloc(text, n + 2);
		if (t == NULL) {
			free(text);
			return -1;
		}
		text = t;
		memcpy(text + n, "\n", 2);
	}
	r = util_write_atomic(path, NULL, text, strlen(text), 0644, NULL);
	free(text);
	return r;
}

/* The outcome into the job's record. */
static void
record_outcome(const char *recpath, const struct callback_outcome *o)
{
	json_t *rec = read_json(recpath);

	if (rec == NULL)
		return;
	result_set_callback(rec, o);
	write_json(recpath, rec, SD_JSON_FILE);
	json_decref(rec);
}

static void
say(void (*report)(void *, const char *), void *user, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
say(void (*report)(void *, const char *), void *user, const char *fmt, ...)
{
	char buf[1200];
	va_list ap;

	if (report == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	report(user, buf);
}

/* One attempt for the leased entry e (at lease, to become path again
 * unless finished).  Returns 1 when the entry is still owed. */
static int
attempt(struct spool *s, const struct callback_config *cfg, json_t *e,
    const char *lease, const char *path, const volatile sig_atomic_t *stop,
    double *next, void (*report)(void *, const char *), void *user)
{
	const char *id = json_string_value(json_object_get(e, "id"));
	const char *event = json_string_value(json_object_get(e, "event"));
	const char *did = json_string_value(json_object_get(e, "delivery_id"));
	const char *state = json_string_value(json_object_get(e, "state"));
	const char *dir = state && strcmp(state, "failed") == 0 ? s->failed : s->done;
	double created = json_number_value(json_object_get(e, "created"));
	double now = util_now(), left, delay, ra;
	struct job_callback cb;
	struct callback_outcome o;
	char *recpath = NULL, *jobpath = NULL, *body = NULL;
	json_t *rec = NULL;
	size_t blen = 0;
	struct stat st;
	int r, owed = 0;

	memset(&cb, 0, sizeof cb);
	memset(&o, 0, sizeof o);
	cb.url = (char *)json_string_value(json_object_get(e, "url"));
	cb.secret_env = (char *)json_string_value(json_object_get(e, "secret_env"));
	cb.include_images = json_is_true(json_object_get(e, "include_images"));
	if (id == NULL || event == NULL || did == NULL || cb.url == NULL ||
	    !util_valid_id(id)) {
		say(report, user, "%s: not a callback entry; removed", path);
		unlink(lease);
		return 0;
	}
	recpath = util_printf("%s/%s.json", dir, id);
	jobpath = util_printf("%s/%s.yaml", dir, id);
	if (recpath == NULL || jobpath == NULL)
		goto back;
	if (lstat(jobpath, &st) < 0) {
		/* Its job is being finished (or was requeued): not yet; a job
		 * that is nowhere any more owes nothing. */
		if (spool_find(s, id, NULL) == SPOOL_NONE &&
		    now - created > cfg->total_s) {
			unlink(lease);
			goto out;
		}
		goto back;
	}
	if ((rec = read_json(recpath)) == NULL ||
	    (body = result_callback_body(rec, cb.include_images, &blen)) == NULL)
		goto back;
	o.attempts = (int)json_integer_value(json_object_get(e, "attempts"));
	left = cfg->total_s - (now - created);
	r = callback_attempt(&cb, cfg->policy, event, did, body, blen,
	    cfg->timeout_s < left ? cfg->timeout_s : left, stop, &o, &ra);
	now = util_now();
	if (r == CALLBACK_DELIVERED) {
		record_outcome(recpath, &o);
		unlink(lease);
		say(report, user, "job %s: callback delivered (%d attempt%s)", id,
		    o.attempts, o.attempts == 1 ? "" : "s");
		goto out;
	}
	delay = ra >= 0 ? ra : callback_backoff(cfg, o.attempts);
	if (r == CALLBACK_INTERRUPTED)
		delay = 0;
	else if (r == CALLBACK_GIVE_UP || o.attempts >= cfg->attempts ||
	    now + delay - created >= cfg->total_s) {
		if (r == CALLBACK_RETRY) {
			size_t n = strlen(o.last_error);
			snprintf(o.last_error + n, sizeof o.last_error - n,
			    "; gave up after %d attempt%s (attempts %d, total_time %g s)",
			    o.attempts, o.attempts == 1 ? "" : "s", cfg->attempts,
			    cfg->total_s);
		}
		record_outcome(recpath, &o);
		unlink(lease);
		say(report, user, "job %s: callback failed after %d attempt%s: %s", id,
		    o.attempts, o.attempts == 1 ? "" : "s", o.last_error);
		goto out;
	}
	json_object_set_new(e, "attempts", json_integer(o.attempts));
	json_object_set_new(e, "next", json_real(now + delay));
	json_object_set_new(e, "last_error", json_string(o.last_error));
	if (write_json(path, e, SD_JSON_LINE) == 0) {
		unlink(lease);
		if (next != NULL && delay < *next)
			*next = delay;
		owed = 1;
		goto out;
	}
back:
	if (sd_rename_noreplace(AT_FDCWD, lease, AT_FDCWD, path) < 0)
		unlink(lease);
	if (next != NULL && *next > 0.5)
		*next = 0.5;
	owed = 1;
out:
	free(body);
	json_decref(rec);
	free(recpath);
	free(jobpath);
	return owed;
}

int
outbox_run(struct spool *s, const struct callback_config *cfg,
    const volatile sig_atomic_t *stop, double *next,
    void (*report)(void *user, const char *line), void *user)
{
	struct dirent *de;
	DIR *d;
	int owed = 0;

	if (next != NULL)
		*next = 3600;
	if ((d = opendir(s->callbacks)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL && !(stop != NULL && *stop)) {
		const char *name = de->d_name;
		size_t n = strlen(name);
		char *path, *lease, *lp, hex[17];
		struct stat st;
		json_t *e;
		double due;

		if (name[0] == '.') {
			/* A lease of a dead deliverer goes back. */
			if ((lp = strstr(name, ".json.lease-")) == NULL)
				continue;
			lease = util_join(s->callbacks, name);
			path = util_printf("%s/%.*s.json", s->callbacks,
			    (int)(lp - name - 1), name + 1);
			if (lease != NULL && path != NULL && lstat(lease, &st) == 0) {
				owed++;
				if (util_now() - (double)st.st_mtim.tv_sec >
				    cfg->timeout_s * 3 + 60 &&
				    sd_rename_noreplace(AT_FDCWD, lease, AT_FDCWD, path) < 0)
					unlink(lease);
			}
			free(lease);
			free(path);
			continue;
		}
		if (n <= 5 || strcmp(name + n - 5, ".json") != 0)
			continue;
		if ((path = util_join(s->callbacks, name)) == NULL)
			continue;
		if ((e = read_json(path)) == NULL) {
			free(path);
			continue;
		}
		due = json_number_value(json_object_get(e, "next")) - util_now();
		if (due > 0) {
			owed++;
			if (next != NULL && due < *next)
				*next = due;
			json_decref(e);
			free(path);
			continue;
		}
		util_random_hex(hex, 8);
		lease = util_printf("%s/.%s.lease-%s", s->callbacks, name, hex);
		if (lease == NULL || rename(path, lease) < 0) {
			json_decref(e);
			free(lease);
			free(path);
			continue;	/* another worker took it */
		}
		utimensat(AT_FDCWD, lease, NULL, 0);
		/* Re-read: the entry may have changed before the rename. */
		json_decref(e);
		if ((e = read_json(lease)) == NULL) {
			unlink(lease);
		} else
			owed += attempt(s, cfg, e, lease, path, stop, next, report, user);
		json_decref(e);
		free(lease);
		free(path);
	}
	closedir(d);
	return owed;
}
