/* spool.c: spool folders, claims by rename(2), stale claim recovery. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/fileio.h"
#include "spool/progress.h"
#include "spool/spool.h"
#include "spool/util.h"

static const char *const state_names[] = {
	"none", "queued", "running", "done", "failed"
};

const char *
spool_state_name(enum spool_state st)
{
	return state_names[st];
}

void
spool_close(struct spool *s)
{
	free(s->root);
	free(s->tmp);
	free(s->incoming);
	free(s->running);
	free(s->done);
	free(s->failed);
	free(s->output);
	free(s->logs);
	free(s->callbacks);
	memset(s, 0, sizeof *s);
}

int
spool_open(struct spool *s, const char *root, int create, struct sd_error *err)
{
	char **dirs[7];
	static const char *const names[7] = {
		"tmp", "incoming", "running", "done", "failed", "output", "logs"
	};
	struct stat st;
	int i;

	memset(s, 0, sizeof *s);
	if (stat(root, &st) < 0) {
		if (errno != ENOENT || !create)
			return sd_fail(err, SD_ENOINPUT, "%s: no such spool folder", root);
		if (util_mkdirs(root, err) < 0)
			return -1;
	} else if (!S_ISDIR(st.st_mode))
		return sd_fail(err, SD_ENOINPUT, "%s: not a folder", root);
	dirs[0] = &s->tmp;
	dirs[1] = &s->incoming;
	dirs[2] = &s->running;
	dirs[3] = &s->done;
	dirs[4] = &s->failed;
	dirs[5] = &s->output;
	dirs[6] = &s->logs;
	s->max_deaths = 2;
	if ((s->root = strdup(root)) == NULL ||
	    (s->callbacks = util_join(root, "callbacks")) == NULL)
		goto oom;
	for (i = 0; i < 7; i++) {
		if ((*dirs[i] = util_join(root, names[i])) == NULL)
			goto oom;
		if (lstat(*dirs[i], &st) == 0) {
			if (!S_ISDIR(st.st_mode) && !(i == 5 && S_ISLNK(st.st_mode))) {
				sd_fail(err, SD_EIO, "%s: not a folder%s", *dirs[i],
				    S_ISLNK(st.st_mode) ? " (a symbolic link: the spool's "
				    "state folders may not be links)" : "");
				spool_close(s);
				return -1;
			}
			continue;
		}
		if (!create) {
			sd_fail(err, SD_ENOINPUT, "%s: not a spool (no %s/ folder; "
			    "`sdbatch watch` creates them)", root, names[i]);
			spool_close(s);
			return -1;
		}
		if (mkdir(*dirs[i], 0777) < 0 && errno != EEXIST) {
			sd_fail(err, SD_EIO, "%s: cannot create: %s", *dirs[i],
			    strerror(errno));
			spool_close(s);
			return -1;
		}
	}
	return 0;
oom:
	spool_close(s);
	return sd_fail(err, SD_EINTERNAL, "out of memory");
}

void
spool_claim_free(struct spool_claim *c)
{
	free(c->name);
	free(c->job_path);
	free(c->claim_path);
	free(c->cancel_path);
	free(c->own_path);
	memset(c, 0, sizeof *c);
}

/* rename(2) that never replaces an existing target. */
static int
rename_noreplace(const char *from, const char *to)
{
	return sd_rename_noreplace(AT_FDCWD, from, AT_FDCWD, to);
}

static char *
state_path(const char *dir, const char *id, const char *ext)
{
	return util_printf("%s/%s%s", dir, id, ext);
}

/* The id of a spool file name: "ID.yaml" / "ID.yml" -> ID; 0 when the name
 * is not a job (dotfiles, *.tmp, other extensions). */
static int
job_name(const char *name, char *id, size_t size)
{
	size_t n = strlen(name);
	size_t ext;

	if (name[0] == '.')
		return 0;
	if (n > 5 && strcmp(name + n - 5, ".yaml") == 0)
		ext = 5;
	else if (n > 4 && strcmp(name + n - 4, ".yml") == 0)
		ext = 4;
	else
		return 0;
	if (n - ext >= size)
		n = size - 1 + ext;
	memcpy(id, name, n - ext);
	id[n - ext] = '\0';
	return 1;
}

/* A valid id made from a bad one: other characters become '_', a unique
 * suffix avoids collisions. */
static void
safe_id(const char *bad, char *out, size_t size)
{
	char hex[9];
	size_t i, o = 0;

	util_random_hex(hex, 4);
	if (!((bad[0] >= 'A' && bad[0] <= 'Z') || (bad[0] >= 'a' && bad[0] <= 'z') ||
	    (bad[0] >= '0' && bad[0] <= '9')))
		out[o++] = 'x';
	for (i = 0; bad[i] != '\0' && o < 80 && o < size - 20; i++) {
		unsigned char c = (unsigned char)bad[i];
		out[o++] = c < 0x80 && (c == '.' || c == '_' || c == '-' ||
		    (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9')) ? (char)c : '_';
	}
	snprintf(out + o, size - o, "-badname-%s", hex);
}

static int
fill_claim(struct spool *s, struct spool_claim *c, const char *id,
    const char *name)
{
	if (snprintf(c->id, sizeof c->id, "%s", id) >= (int)sizeof c->id)
		return -1;
	c->name = strdup(name);
	c->job_path = state_path(s->running, id, ".yaml");
	c->claim_path = state_path(s->running, id, ".claim");
	c->cancel_path = state_path(s->running, id, ".cancel");
	return c->name && c->job_path && c->claim_path && c->cancel_path ? 0 : -1;
}

static int
write_claim(struct spool *s, struct spool_claim *c, struct sd_error *err)
{
	char when[40], *text;
	json_t *o;
	int r;

	util_random_hex(c->nonce, 16);
	c->started = util_now();
	util_rfc3339(c->started, when, sizeof when);
	o = json_pack("{s:s, s:s, s:s, s:i, s:I, s:s, s:f, s:s, s:s, s:i, s:s}",
	    "host", util_hostname(), "boot_id", util_boot_id(),
	    "pid_ns", util_pid_ns(), "pid", (int)getpid(),
	    "pid_start", (json_int_t)util_pid_start(getpid()),
	    "started", when, "started_epoch", c->started, "nonce", c->nonce,
	    "name", c->name, "deaths", c->deaths, "instance", c->instance);
	if (o == NULL || (text = json_dumps(o, SD_JSON_LINE)) == NULL) {
		json_decref(o);
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	}
	json_decref(o);
	r = util_write_atomic(c->claim_path, s->tmp, text, strlen(text), 0644, err);
	free(text);
	return r;
}

static json_t *read_json(const char *path);

/* incoming/.ID.state: what a queued job carries over from its earlier
 * runs (worker deaths, the instance id of its callbacks), valid for the
 * job file of that inode only. */
static char *
state_file(struct spool *s, const char *id)
{
	return util_printf("%s/.%s.state", s->incoming, id);
}

static void
write_state(struct spool *s, const char *id, const char *job, int deaths,
    const char *instance, const char *last)
{
	struct stat st;
	char *path, *text = NULL;
	json_t *o;

	if (lstat(job, &st) < 0 || (path = state_file(s, id)) == NULL)
		return;
	o = json_pack("{s:I, s:i, s:s, s:s}", "ino", (json_int_t)st.st_ino,
	    "deaths", deaths, "instance", instance, "last_error", last ? last : "");
	if (o != NULL && (text = json_dumps(o, SD_JSON_LINE)) != NULL)
		util_write_atomic(path, NULL, text, strlen(text), 0644, NULL);
	free(text);
	json_decref(o);
	free(path);
}

/* Read the state of the job now at job (deaths, instance) into c. */
static void
read_state(struct spool *s, struct spool_claim *c, const char *job)
{
	struct stat st;
	char *path = state_file(s, c->id);
	json_t *o = path ? read_json(path) : NULL;
	const char *inst;

	c->deaths = 0;
	util_random_hex(c->instance, 16);
	if (o != NULL && lstat(job, &st) == 0 && json_integer_value(json_object_get(
	    o, "ino")) == (json_int_t)st.st_ino) {
		json_int_t d = json_integer_value(json_object_get(o, "deaths"));
		c->deaths = d > 0 && d < 1000 ? (int)d : 0;
		inst = json_string_value(json_object_get(o, "instance"));
		if (inst != NULL && strlen(inst) == 32 && strspn(inst,
		    "0123456789abcdef") == 32)
			memcpy(c->instance, inst, 33);
	}
	json_decref(o);
	free(path);
}

static void
drop_state(struct spool *s, const char *id)
{
	char *path = state_file(s, id);

	if (path != NULL)
		unlink(path);
	free(path);
}

/* A stamp for history files: the RFC 3339 time without '-', ':', '.'. */
static void
history_stamp(char *stamp, size_t size)
{
	char when[40];
	size_t i, o = 0;

	util_rfc3339(util_now(), when, sizeof when);
	for (i = 0; when[i] != '\0' && o + 1 < size; i++)
		if (when[i] != '-' && when[i] != ':' && when[i] != '.')
			stamp[o++] = when[i];
	stamp[o] = '\0';
}

/* Records of an earlier run of the same id (a job file dropped into
 * incoming/ under a used id, or queued again by hand) are never lost: they
 * move to done/.history/ or failed/.history/ as ID-TIME.yaml and .json,
 * as `sdbatch retry` keeps them, and the job runs anew. */
static void
keep_old_records(struct spool *s, const char *id)
{
	const char *dirs[2] = { s->done, s->failed };
	static const char *const exts[2] = { ".yaml", ".json" };
	char stamp[40];
	int i, k;

	history_stamp(stamp, sizeof stamp);
	for (i = 0; i < 2; i++)
		for (k = 0; k < 2; k++) {
			char *p = state_path(dirs[i], id, exts[k]), *h = NULL, *hd;
			if (p != NULL && access(p, F_OK) == 0 &&
			    (hd = util_printf("%s/.history", dirs[i])) != NULL) {
				if (util_mkdirs(hd, NULL) == 0 &&
				    (h = util_printf("%s/%s-%s%s", hd, id, stamp,
				    exts[k])) != NULL && rename(p, h) == 0)
					util_fsync_dir(hd);
				free(hd);
			}
			free(h);
			free(p);
		}
}

/* Try to claim incoming/name.  1 claimed, 0 lost or skipped, -1 error. */
static int
claim_one(struct spool *s, const char *name, struct spool_claim *c,
    struct sd_error *err)
{
	char id[512], safe[160], *from = NULL, *to = NULL;
	struct stat st;
	int bad, r = 0;

	memset(c, 0, sizeof *c);
	if (!job_name(name, id, sizeof id))
		return 0;
	if ((from = util_join(s->incoming, name)) == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	if (lstat(from, &st) < 0 || S_ISDIR(st.st_mode)) {
		free(from);
		return 0;
	}
	bad = !util_valid_id(id);
	if (bad) {
		safe_id(id, safe, sizeof safe);
		snprintf(c->bad_name, sizeof c->bad_name, "\"%.300s\" is not a valid "
		    "job id (1-128 characters: letters, digits, '.', '_', '-', "
		    "starting with a letter or digit); moved to failed/ as %s.yaml",
		    name, safe);
	}
	if (fill_claim(s, c, bad ? safe : id, name) < 0) {
		r = sd_fail(err, SD_EINTERNAL, "out of memory");
		goto out;
	}
	to = c->job_path;
	if (lstat(to, &st) == 0)
		goto lost;	/* the same id is running: wait for it */
	unlink(c->cancel_path);	/* an orphan: no job of this id runs */
	if (rename_noreplace(from, to) < 0) {
		if (errno == ENOENT || errno == EEXIST)
			goto lost;	/* another worker won */
		r = sd_fail(err, SD_EIO, "claim %s: %s", from, strerror(errno));
		goto out;
	}
	util_fsync_dir(s->running);
	read_state(s, c, to);
	if (write_claim(s, c, err) < 0) {
		/* Without a claim file the job would look stale: put it back. */
		rename_noreplace(to, from);
		r = -1;
		goto out;
	}
	drop_state(s, c->id);
	keep_old_records(s, c->id);
	free(from);
	return 1;
lost:
	spool_claim_free(c);
	free(from);
	return 0;
out:
	spool_claim_free(c);
	free(from);
	return r;
}

struct candidate {
	char *name;
	struct timespec mtime;
};

static int
by_age(const void *a, const void *b)
{
	const struct candidate *x = a, *y = b;

	if (x->mtime.tv_sec != y->mtime.tv_sec)
		return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
	if (x->mtime.tv_nsec != y->mtime.tv_nsec)
		return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
	return strcmp(x->name, y->name);
}

int
spool_claim_next(struct spool *s, struct spool_claim *c, struct sd_error *err)
{
	struct candidate *cand = NULL;
	size_t n = 0, cap = 0, i;
	struct dirent *de;
	DIR *d;
	int r = 0;

	if ((d = opendir(s->incoming)) == NULL)
		return sd_fail(err, SD_EIO, "%s: %s", s->incoming, strerror(errno));
	while ((de = readdir(d)) != NULL) {
		char id[512], *p;
		struct stat st;

		if (!job_name(de->d_name, id, sizeof id))
			continue;
		if ((p = util_join(s->incoming, de->d_name)) == NULL)
			break;
		if (lstat(p, &st) < 0 || S_ISDIR(st.st_mode)) {
			free(p);
			continue;
		}
		free(p);
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 32;
			struct candidate *nn = realloc(cand, nc * sizeof *nn);
			if (nn == NULL)
				break;
			cand = nn;
			cap = nc;
		}
		if ((cand[n].name = strdup(de->d_name)) == NULL)
			break;
		cand[n++].mtime = st.st_mtim;
	}
	closedir(d);
	if (n > 1)
		qsort(cand, n, sizeof *cand, by_age);
	for (i = 0; i < n && r == 0; i++)
		r = claim_one(s, cand[i].name, c, err);
	for (i = 0; i < n; i++)
		free(cand[i].name);
	free(cand);
	return r;
}

int
spool_claim_id(struct spool *s, const char *id, struct spool_claim *c,
    struct sd_error *err)
{
	char name[200];
	int r;

	snprintf(name, sizeof name, "%.140s.yaml", id);
	if ((r = claim_one(s, name, c, err)) != 0)
		return r;
	snprintf(name, sizeof name, "%.140s.yml", id);
	return claim_one(s, name, c, err);
}

/* Open the claim file and check that it holds our nonce: the descriptor,
 * or -1 (errno ESTALE when it is another worker's). */
static int
open_own_claim(const char *path, const char *nonce)
{
	char buf[4096], want[64];
	ssize_t n;
	int fd;

	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return -1;
	n = read(fd, buf, sizeof buf - 1);
	buf[n > 0 ? n : 0] = '\0';
	snprintf(want, sizeof want, "\"nonce\":\"%s\"", nonce);
	if (nonce[0] == '\0' || strstr(buf, want) == NULL) {
		close(fd);
		errno = ESTALE;
		return -1;
	}
	return fd;
}

int
spool_heartbeat(const struct spool_claim *c)
{
	int fd = open_own_claim(c->claim_path, c->nonce), r;

	if (fd < 0)
		return -1;
	r = futimens(fd, NULL);
	close(fd);
	return r;
}

int
spool_claim_held(const struct spool_claim *c)
{
	int fd;

	if (c->lost)
		return 0;
	if ((fd = open_own_claim(c->claim_path, c->nonce)) < 0)
		return 0;
	close(fd);
	return 1;
}

int
spool_cancel_requested(const struct spool_claim *c)
{
	struct stat st;

	return c->cancel_path != NULL && lstat(c->cancel_path, &st) == 0;
}

static void
log_event(struct spool *s, const char *id, const char *event, const char *error)
{
	struct progress_event e;
	char *log = state_path(s->logs, id, ".jsonl");

	if (log == NULL)
		return;
	progress_event_init(&e, event, id);
	e.error = error;
	progress_append(log, &e);
	free(log);
}

/* Take the claim file away (to tmp/) if it is still ours: from then on no
 * other worker can take the job over.  0, or -1 (SD_EREQUEUED, c->lost)
 * when another worker holds it now. */
static int
own_claim(struct spool *s, struct spool_claim *c, struct sd_error *err)
{
	char hex[17], *moved;
	struct stat st;
	int fd;

	if (c->own_path != NULL)
		return 0;
	if (c->lost)
		goto lost;
	util_random_hex(hex, 8);
	if ((moved = util_printf("%s/.%s.claim.own-%s", s->tmp, c->id, hex)) == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	if (rename(c->claim_path, moved) < 0) {
		free(moved);
		goto lost;
	}
	if ((fd = open_own_claim(moved, c->nonce)) < 0) {
		/* Another worker's claim: give it back. */
		if (rename_noreplace(moved, c->claim_path) < 0)
			unlink(moved);
		free(moved);
		goto lost;
	}
	close(fd);
	c->own_path = moved;
	/* A job file without a claim is recovered once its ctime is older
	 * than stale_after: make it new. */
	if (lstat(c->job_path, &st) == 0)
		chmod(c->job_path, st.st_mode & 07777);
	return 0;
lost:
	c->lost = 1;
	return sd_fail(err, SD_EREQUEUED, "job %s: another worker took the claim "
	    "over (this one was paused or cut off for longer than stale_after); "
	    "standing down", c->id);
}

static void
release_claim(struct spool_claim *c)
{
	if (c->own_path != NULL)
		unlink(c->own_path);
	unlink(c->cancel_path);
	free(c->own_path);
	c->own_path = NULL;
}

static void write_failed(struct spool *s, const char *id, const char *job,
    const char *status, int code, const char *message, const char *event);

/* Put the owned job back to incoming/ with its state; a job queued under
 * the same id meanwhile is never replaced: this one goes to failed/. */
static int
put_back(struct spool *s, struct spool_claim *c, int deaths, const char *why,
    struct sd_error *err)
{
	char *to = state_path(s->incoming, c->id, ".yaml"), msg[700];
	int r = 0;

	if (to == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	write_state(s, c->id, c->job_path, deaths, c->instance, why);
	if (rename_noreplace(c->job_path, to) == 0) {
		util_fsync_dir(s->incoming);
	} else if (errno == EEXIST) {
		drop_state(s, c->id);
		snprintf(msg, sizeof msg, "not requeued: a newer job %s was queued "
		    "while this one ran (%s)", c->id, why);
		write_failed(s, c->id, c->job_path, "failed", SD_EDATA, msg, "failed");
		r = sd_fail(err, SD_EDATA, "job %s: %s", c->id, msg);
	} else
		r = sd_fail(err, SD_EIO, "requeue %s: %s", c->job_path, strerror(errno));
	free(to);
	return r;
}

int
spool_requeue(struct spool *s, struct spool_claim *c, struct sd_error *err)
{
	int r;

	if (own_claim(s, c, err) < 0)
		return -1;
	r = put_back(s, c, c->deaths, "interrupted", err);
	release_claim(c);
	return r;
}

int
spool_finish(struct spool *s, struct spool_claim *c, int failed,
    const char *record, size_t len, const char *cbentry, size_t cblen,
    struct sd_error *err)
{
	const char *dir = failed ? s->failed : s->done;
	char *json = state_path(dir, c->id, ".json");
	char *yaml = state_path(dir, c->id, ".yaml");
	char *cbpath = NULL, why[SD_ERROR_MAX + 100];
	struct sd_error e;
	int r = 0;

	sd_error_clear(&e);
	if (json == NULL || yaml == NULL) {
		r = sd_fail(err, SD_EINTERNAL, "out of memory");
		goto out;
	}
	if (own_claim(s, c, err) < 0) {
		r = -1;
		goto out;
	}
	/* The record first: when the job file appears in done/ or failed/,
	 * its record is there; then the callback it owes. */
	if (util_write_atomic(json, s->tmp, record, len, 0644, &e) < 0)
		goto cannot;
	if (cbentry != NULL) {
		if ((cbpath = spool_callback_path(s, c->id)) == NULL) {
			sd_fail(&e, SD_EINTERNAL, "out of memory");
			goto cannot;
		}
		if (util_mkdirs(s->callbacks, &e) < 0 ||
		    util_write_atomic(cbpath, NULL, cbentry, cblen, 0644, &e) < 0)
			goto cannot;
	}
	if (rename(c->job_path, yaml) < 0) {
		sd_fail(&e, SD_EIO, "%s: %s", yaml, strerror(errno));
		goto cannot;
	}
	util_fsync_dir(dir);
	release_claim(c);
	goto out;
cannot:
	/* Never leave the job claimed: run it again, or after max_deaths
	 * such failures fail it (where failed/ can still be written). */
	unlink(json);
	if (cbpath != NULL)
		unlink(cbpath);
	snprintf(why, sizeof why, "the result record could not be written: %s",
	    e.message);
	if (c->deaths + 1 >= s->max_deaths) {
		char msg[SD_ERROR_MAX + 200];
		snprintf(msg, sizeof msg, "%s (%d times; not run again)", why,
		    c->deaths + 1);
		write_failed(s, c->id, c->job_path, "failed", SD_EIO, msg, "failed");
	}
	if (lstat(c->job_path, &(struct stat){0}) == 0) {
		if (put_back(s, c, c->deaths + 1, why, NULL) == 0)
			log_event(s, c->id, "requeued", why);
	}
	release_claim(c);
	r = sd_fail(err, SD_EIO, "job %s: %s; %s", c->id, why,
	    spool_find(s, c->id, NULL) == SPOOL_FAILED ? "moved to failed/" :
	    "requeued");
out:
	free(cbpath);
	free(json);
	free(yaml);
	return r;
}

char *
spool_callback_path(struct spool *s, const char *id)
{
	return state_path(s->callbacks, id, ".json");
}

json_t *
spool_simple_record(const char *id, const char *status, int code,
    const char *message)
{
	char when[40];
	json_t *o;

	util_rfc3339(util_now(), when, sizeof when);
	/* Cancelled while queued (code 0): no worker ran it (the cancelling
	 * command is not one), and it is no error with an exit status. */
	if (code == 0 && strcmp(status, "cancelled") == 0) {
		o = json_pack("{s:s, s:s, s:[], s:n, s:s}", "id", id, "status",
		    status, "images", "worker", "finished", when);
		if (o != NULL && message != NULL)
			json_object_set_new(o, "error", json_pack("{s:s}", "message",
			    message));
		return o;
	}
	o = json_pack("{s:s, s:s, s:[], s:{s:s, s:i}, s:s}", "id", id,
	    "status", status, "images", "worker", "host", util_hostname(),
	    "pid", (int)getpid(), "finished", when);
	if (o != NULL && message != NULL)
		json_object_set_new(o, "error", json_pack("{s:i, s:s}", "code", code,
		    "message", message));
	return o;
}

/* Is this claim stale?  why gets the reason.  A pid means the same
 * process only on the same host, boot and PID namespace (containers with
 * host networking share a host name); elsewhere the heartbeat's age tells. */
static int
claim_stale(json_t *claim, const struct stat *st, double stale_s, char *why,
    size_t size)
{
	const char *host = json_string_value(json_object_get(claim, "host"));
	const char *boot = json_string_value(json_object_get(claim, "boot_id"));
	const char *ns = json_string_value(json_object_get(claim, "pid_ns"));
	json_int_t pid = json_integer_value(json_object_get(claim, "pid"));
	json_int_t start = json_integer_value(json_object_get(claim, "pid_start"));
	double age = util_now() - ((double)st->st_mtim.tv_sec +
	    (double)st->st_mtim.tv_nsec * 1e-9);

	if (host != NULL && strcmp(host, util_hostname()) == 0 && boot != NULL &&
	    strcmp(boot, util_boot_id()) == 0 && ns != NULL &&
	    strcmp(ns, util_pid_ns()) == 0) {
		unsigned long long now_start;
		if (!util_pid_alive((pid_t)pid)) {
			snprintf(why, size, "its worker (pid %lld on %s) is gone",
			    (long long)pid, host);
			return 1;
		}
		now_start = util_pid_start((pid_t)pid);
		if (start > 0 && now_start > 0 && (unsigned long long)start != now_start) {
			snprintf(why, size, "its worker (pid %lld on %s) is gone "
			    "(the pid was reused)", (long long)pid, host);
			return 1;
		}
		return 0;
	}
	if (age > stale_s) {
		snprintf(why, size, "no heartbeat from %s (pid %lld%s) for %.0f s",
		    host ? host : "an unknown host", (long long)pid,
		    host != NULL && strcmp(host, util_hostname()) == 0 ?
		    ", another boot or PID namespace" : "", age);
		return 1;
	}
	return 0;
}

static json_t *
read_json(const char *path)
{
	size_t len;
	char *buf = util_read_file(path, 1 << 20, 1, &len, NULL);
	json_t *j;

	if (buf == NULL)
		return NULL;
	j = json_loadb(buf, len, 0, NULL);
	free(buf);
	return j;
}

/* Move running/ID.yaml (job) to failed/ with a simple record; 0 when
 * moved (the record written first). */
static void
write_failed(struct spool *s, const char *id, const char *job,
    const char *status, int code, const char *message, const char *event)
{
	char *json = state_path(s->failed, id, ".json");
	char *to = state_path(s->failed, id, ".yaml");
	json_t *rec = spool_simple_record(id, status, code, message);
	char *text = rec ? json_dumps(rec, SD_JSON_FILE) : NULL;

	if (json != NULL && to != NULL && text != NULL &&
	    util_write_atomic(json, s->tmp, text, strlen(text), 0644, NULL) == 0) {
		if (rename(job, to) == 0) {
			util_fsync_dir(s->failed);
			log_event(s, id, event, message);
		} else
			unlink(json);
	}
	free(text);
	free(json);
	free(to);
	json_decref(rec);
}

/* Put a stale job back (or to failed/ when a cancel was asked for, or
 * when its workers died max_deaths times).  deaths: of the claim, -1 when
 * there was none (then the queued state tells).  1 when requeued. */
static int
recover_job(struct spool *s, const char *id, const char *why, int deaths,
    const char *instance)
{
	struct spool_claim c;
	char msg[700];
	struct stat st;
	int r = 0;

	memset(&c, 0, sizeof c);
	snprintf(c.id, sizeof c.id, "%s", id);
	c.job_path = state_path(s->running, id, ".yaml");
	c.cancel_path = state_path(s->running, id, ".cancel");
	if (c.job_path == NULL || c.cancel_path == NULL)
		goto out;
	if (lstat(c.cancel_path, &st) == 0) {
		snprintf(msg, sizeof msg, "cancelled (its worker stopped: %s)", why);
		write_failed(s, id, c.job_path, "cancelled", SD_EREQUEUED, msg,
		    "cancelled");
		unlink(c.cancel_path);
		goto out;
	}
	if (deaths < 0)
		read_state(s, &c, c.job_path);
	else {
		c.deaths = deaths;
		if (instance != NULL && strlen(instance) == 32)
			memcpy(c.instance, instance, 33);
		else
			util_random_hex(c.instance, 16);
	}
	c.deaths++;
	if (c.deaths >= s->max_deaths) {
		snprintf(msg, sizeof msg, "its worker died %d times running it (last: "
		    "%s); not run again (max_worker_deaths: %d)", c.deaths, why,
		    s->max_deaths);
		write_failed(s, id, c.job_path, "failed", SD_EINTERNAL, msg, "failed");
		if (lstat(c.job_path, &st) < 0)
			goto out;
		/* failed/ cannot be written: requeue rather than lose it */
	}
	snprintf(msg, sizeof msg, "stale claim: %s", why);
	if (put_back(s, &c, c.deaths, msg, NULL) == 0 &&
	    lstat(c.job_path, &st) < 0) {
		log_event(s, id, "requeued", msg);
		r = 1;
	}
out:
	free(c.job_path);
	free(c.cancel_path);
	return r;
}

/* Take over running/ID.claim if it is (still) the stale one we read. */
static int
take_claim(struct spool *s, const char *id, const char *claim_path,
    const char *nonce)
{
	char hex[17], *moved;
	json_t *j;
	int ok;

	util_random_hex(hex, 8);
	if ((moved = util_printf("%s/.%s.claim.stale-%s", s->tmp, id, hex)) == NULL)
		return 0;
	if (rename(claim_path, moved) < 0) {
		free(moved);
		return 0;	/* another worker took it, or the job finished */
	}
	j = read_json(moved);
	ok = j != NULL && nonce != NULL &&
	    strcmp(json_string_value(json_object_get(j, "nonce")) ?
	    json_string_value(json_object_get(j, "nonce")) : "", nonce) == 0;
	json_decref(j);
	if (!ok) {
		/* A new claim replaced the stale one meanwhile: give it back. */
		if (rename_noreplace(moved, claim_path) < 0)
			unlink(moved);
		free(moved);
		return 0;
	}
	unlink(moved);
	free(moved);
	return 1;
}

int
spool_recover(struct spool *s, double stale_s, int *requeued,
    struct sd_error *err)
{
	struct dirent *de;
	DIR *d;
	int n = 0;
	double now = util_now();

	if ((d = opendir(s->running)) == NULL)
		return sd_fail(err, SD_EIO, "%s: %s", s->running, strerror(errno));
	while ((de = readdir(d)) != NULL) {
		const char *name = de->d_name;
		size_t len = strlen(name);
		char id[200], why[300], *job = NULL, *claim = NULL;
		struct stat st, jst;
		int has_job;

		if (name[0] == '.')
			continue;
		if (len > 6 && strcmp(name + len - 6, ".claim") == 0 && len - 6 < sizeof id) {
			json_t *c;
			memcpy(id, name, len - 6);
			id[len - 6] = '\0';
			claim = util_join(s->running, name);
			job = state_path(s->running, id, ".yaml");
			if (claim == NULL || job == NULL || lstat(claim, &st) < 0)
				goto next;
			has_job = lstat(job, &jst) == 0;
			if ((c = read_json(claim)) == NULL) {
				/* Unreadable: written atomically, so not ours to
				 * judge by content; judge by age. */
				if (now - (double)st.st_mtim.tv_sec > stale_s) {
					unlink(claim);
					if (has_job && recover_job(s, id,
					    "its claim file is unreadable", -1, NULL) == 1)
						n++;
				}
				goto next;
			}
			if (claim_stale(c, &st, stale_s, why, sizeof why) &&
			    take_claim(s, id, claim, json_string_value(
			    json_object_get(c, "nonce")))) {
				json_int_t d = json_integer_value(json_object_get(c,
				    "deaths"));
				if (has_job && recover_job(s, id, why, d > 0 && d < 1000 ?
				    (int)d : 0, json_string_value(json_object_get(c,
				    "instance"))) == 1)
					n++;
			}
			json_decref(c);
		} else if (job_name(name, id, sizeof id)) {
			/* A job without a claim: its worker died between the
			 * rename and writing the claim, or is just there. */
			char *cl = state_path(s->running, id, ".claim");
			job = util_join(s->running, name);
			if (cl != NULL && job != NULL && lstat(cl, &st) < 0 &&
			    errno == ENOENT && lstat(job, &jst) == 0 &&
			    now - (double)jst.st_ctim.tv_sec > stale_s) {
				snprintf(why, sizeof why, "claimed without a claim file "
				    "for %.0f s", now - (double)jst.st_ctim.tv_sec);
				if (recover_job(s, id, why, -1, NULL) == 1)
					n++;
			}
			free(cl);
		} else if (len > 7 && strcmp(name + len - 7, ".cancel") == 0 &&
		    len - 7 < sizeof id) {
			memcpy(id, name, len - 7);
			id[len - 7] = '\0';
			job = state_path(s->running, id, ".yaml");
			claim = util_join(s->running, name);
			if (job != NULL && claim != NULL && lstat(job, &jst) < 0 &&
			    lstat(claim, &st) == 0 && now - (double)st.st_mtim.tv_sec > 60)
				unlink(claim);
		}
next:
		free(job);
		free(claim);
	}
	closedir(d);
	/* Leftover staging files of dead writers. */
	if ((d = opendir(s->tmp)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			char *p;
			struct stat st;
			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			if ((p = util_join(s->tmp, de->d_name)) == NULL)
				continue;
			if (lstat(p, &st) == 0 && S_ISREG(st.st_mode) &&
			    now - (double)st.st_mtim.tv_sec > 3600)
				unlink(p);
			free(p);
		}
		closedir(d);
	}
	if (requeued != NULL)
		*requeued = n;
	return 0;
}

enum spool_state
spool_find(struct spool *s, const char *id, char **path)
{
	const char *dirs[4] = { s->incoming, s->running, s->done, s->failed };
	static const enum spool_state st[4] = {
		SPOOL_QUEUED, SPOOL_RUNNING, SPOOL_DONE, SPOOL_FAILED
	};
	static const char *const exts[2] = { ".yaml", ".yml" };
	struct stat sb;
	int i, k;

	if (path != NULL)
		*path = NULL;
	for (i = 0; i < 4; i++)
		for (k = 0; k < 2; k++) {
			char *p = state_path(dirs[i], id, exts[k]);
			if (p != NULL && lstat(p, &sb) == 0) {
				if (path != NULL)
					*path = p;
				else
					free(p);
				return st[i];
			}
			free(p);
		}
	return SPOOL_NONE;
}

int
spool_submit(struct spool *s, const char *id, const char *data, size_t len,
    struct sd_error *err)
{
	char hex[17], *tmp = NULL, *to = NULL;
	enum spool_state st;
	int fd = -1, r = -1;
	size_t off = 0;

	if (!util_valid_id(id))
		return sd_fail(err, SD_EDATA, "\"%.140s\" is not a valid job id "
		    "(1-128 characters: letters, digits, '.', '_', '-', starting "
		    "with a letter or digit)", id);
	if ((st = spool_find(s, id, NULL)) != SPOOL_NONE)
		return sd_fail(err, SD_EDATA, "job %s exists already (%s); give "
		    "another id with --id", id, spool_state_name(st));
	util_random_hex(hex, 8);
	tmp = util_printf("%s/.%s.%s.tmp", s->tmp, id, hex);
	to = state_path(s->incoming, id, ".yaml");
	if (tmp == NULL || to == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		sd_fail(err, SD_EIO, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	while (off < len) {
		ssize_t w = write(fd, data + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			sd_fail(err, SD_EIO, "%s: %s", tmp, strerror(errno));
			goto out;
		}
		off += (size_t)w;
	}
	if (fsync(fd) < 0 || close(fd) < 0) {
		fd = -1;
		sd_fail(err, SD_EIO, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	/* link(2) never replaces a file, and is atomic over NFS too. */
	if (link(tmp, to) < 0) {
		if (errno == EEXIST) {
			sd_fail(err, SD_EDATA, "job %s exists already (queued)", id);
			goto out;
		}
		if (rename_noreplace(tmp, to) < 0) {
			sd_fail(err, errno == EEXIST ? SD_EDATA : SD_EIO, "%s: %s", to,
			    strerror(errno));
			goto out;
		}
	}
	util_fsync_dir(s->incoming);
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	if (tmp != NULL)
		unlink(tmp);
	free(tmp);
	free(to);
	return r;
}

int
spool_cancel(struct spool *s, const char *id, enum spool_state *state,
    struct sd_error *err)
{
	static const char *const exts[2] = { ".yaml", ".yml" };
	struct stat st;
	char *from, *to, *job, *cancel;
	enum spool_state now;
	int k, fd;

	*state = SPOOL_NONE;
	if (!util_valid_id(id))
		return sd_fail(err, SD_EUSAGE, "\"%.140s\" is not a valid job id", id);
	for (k = 0; k < 2; k++) {
		from = state_path(s->incoming, id, exts[k]);
		to = state_path(s->failed, id, ".yaml");
		if (from == NULL || to == NULL) {
			free(from);
			free(to);
			return sd_fail(err, SD_EINTERNAL, "out of memory");
		}
		if (lstat(from, &st) == 0) {
			/* Records of an earlier run of this id make way, as
			 * they would when a worker claims it. */
			keep_old_records(s, id);
		}
		if (rename_noreplace(from, to) == 0) {
			char *json = state_path(s->failed, id, ".json"), *text = NULL;
			json_t *rec = spool_simple_record(id, "cancelled", 0,
			    "cancelled while queued");
			if (rec != NULL)
				text = json_dumps(rec, SD_JSON_FILE);
			if (json != NULL && text != NULL)
				util_write_atomic(json, s->tmp, text, strlen(text), 0644, NULL);
			json_decref(rec);
			free(text);
			free(json);
			free(from);
			free(to);
			log_event(s, id, "cancelled", "cancelled while queued");
			*state = SPOOL_QUEUED;
			return 0;
		}
		free(from);
		free(to);
	}
	job = state_path(s->running, id, ".yaml");
	cancel = state_path(s->running, id, ".cancel");
	if (job == NULL || cancel == NULL) {
		free(job);
		free(cancel);
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	}
	if (lstat(job, &st) == 0) {
		fd = open(cancel, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
		if (fd < 0) {
			sd_fail(err, SD_EIO, "%s: %s", cancel, strerror(errno));
			free(job);
			free(cancel);
			return -1;
		}
		dprintf(fd, "cancel requested by pid %ld on %s\n", (long)getpid(),
		    util_hostname());
		close(fd);
		/* The job may have finished meanwhile: then the request is
		 * an orphan. */
		if (lstat(job, &st) == 0) {
			*state = SPOOL_RUNNING;
			free(job);
			free(cancel);
			return 0;
		}
		unlink(cancel);
	}
	free(job);
	free(cancel);
	now = spool_find(s, id, NULL);
	*state = now;
	if (now == SPOOL_DONE || now == SPOOL_FAILED)
		return sd_fail(err, SD_EDATA, "job %s has finished already (%s)", id,
		    spool_state_name(now));
	if (now == SPOOL_QUEUED || now == SPOOL_RUNNING)
		return sd_fail(err, SD_EIO, "job %s changed state while cancelling; "
		    "try again", id);
	return sd_fail(err, SD_ENOINPUT, "no job %s in %s", id, s->root);
}

int
spool_retry(struct spool *s, const char *id, struct sd_error *err)
{
	char *yaml = NULL, *json = NULL, *hist = NULL, *to = NULL, stamp[40];
	enum spool_state st;
	int r = -1;

	if (!util_valid_id(id))
		return sd_fail(err, SD_EUSAGE, "\"%.140s\" is not a valid job id", id);
	st = spool_find(s, id, NULL);
	if (st == SPOOL_NONE)
		return sd_fail(err, SD_ENOINPUT, "no job %s in %s", id, s->root);
	if (st != SPOOL_FAILED)
		return sd_fail(err, SD_EDATA, "job %s is %s, not failed: nothing to "
		    "retry", id, spool_state_name(st));
	history_stamp(stamp, sizeof stamp);
	yaml = state_path(s->failed, id, ".yaml");
	json = state_path(s->failed, id, ".json");
	hist = util_printf("%s/.history/%s-%s.json", s->failed, id, stamp);
	to = state_path(s->incoming, id, ".yaml");
	if (yaml == NULL || json == NULL || hist == NULL || to == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto out;
	}
	{
		char *dir = util_dirname(hist);
		int m = dir != NULL ? util_mkdirs(dir, err) : -1;
		free(dir);
		if (m < 0)
			goto out;
	}
	/* The old record first, as history: the claim would remove it. */
	if (rename(json, hist) < 0 && errno != ENOENT) {
		sd_fail(err, SD_EIO, "%s: %s", json, strerror(errno));
		goto out;
	}
	if (rename_noreplace(yaml, to) < 0) {
		int e = errno;
		rename(hist, json);
		if (e == EEXIST)
			sd_fail(err, SD_EDATA, "job %s is queued already", id);
		else
			sd_fail(err, SD_EIO, "%s: %s", yaml, strerror(e));
		goto out;
	}
	util_fsync_dir(s->incoming);
	log_event(s, id, "requeued", "retry");
	r = 0;
out:
	free(yaml);
	free(json);
	free(hist);
	free(to);
	return r;
}

json_t *
spool_last_event(const char *log_path)
{
	char buf[8192];
	ssize_t n;
	off_t size;
	int fd;
	char *end, *start;

	if ((fd = open(log_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		return NULL;
	size = lseek(fd, 0, SEEK_END);
	if (size < 0) {
		close(fd);
		return NULL;
	}
	n = pread(fd, buf, sizeof buf - 1, size > (off_t)sizeof buf - 1 ?
	    size - (off_t)sizeof buf + 1 : 0);
	close(fd);
	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	end = buf + n;
	while (end > buf && end[-1] == '\n')
		*--end = '\0';
	start = strrchr(buf, '\n');
	start = start ? start + 1 : buf;
	return json_loads(start, 0, NULL);
}

static int
by_state(const void *a, const void *b)
{
	const struct spool_entry *x = a, *y = b;

	if (x->state != y->state)
		return x->state < y->state ? -1 : 1;
	if (x->mtime != y->mtime)
		return x->mtime < y->mtime ? -1 : 1;
	return strcmp(x->id, y->id);
}

void
spool_list_free(struct spool_entry *e, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		json_decref(e[i].claim);
		json_decref(e[i].progress);
		json_decref(e[i].record);
	}
	free(e);
}

int
spool_list(struct spool *s, const char *id, struct spool_entry **out,
    struct sd_error *err)
{
	const char *dirs[4] = { s->incoming, s->running, s->done, s->failed };
	static const enum spool_state sts[4] = {
		SPOOL_QUEUED, SPOOL_RUNNING, SPOOL_DONE, SPOOL_FAILED
	};
	struct spool_entry *e = NULL;
	int n = 0, cap = 0, i;

	for (i = 0; i < 4; i++) {
		struct dirent *de;
		DIR *d = opendir(dirs[i]);

		if (d == NULL) {
			spool_list_free(e, n);
			return sd_fail(err, SD_EIO, "%s: %s", dirs[i], strerror(errno));
		}
		while ((de = readdir(d)) != NULL) {
			char jid[512], *p;
			struct stat st;
			struct spool_entry *x;

			if (!job_name(de->d_name, jid, sizeof jid))
				continue;
			if (id != NULL && strcmp(jid, id) != 0)
				continue;
			if ((p = util_join(dirs[i], de->d_name)) == NULL)
				continue;
			if (lstat(p, &st) < 0) {
				free(p);
				continue;
			}
			free(p);
			if (n == cap) {
				int nc = cap ? cap * 2 : 64;
				struct spool_entry *ne = realloc(e, (size_t)nc * sizeof *ne);
				if (ne == NULL)
					break;
				e = ne;
				cap = nc;
			}
			x = &e[n++];
			memset(x, 0, sizeof *x);
			if (snprintf(x->id, sizeof x->id, "%s", jid) >= (int)sizeof x->id)
				x->id[sizeof x->id - 1] = '\0';
			x->state = sts[i];
			x->mtime = (double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec * 1e-9;
			if (x->state == SPOOL_RUNNING) {
				char *c = state_path(s->running, jid, ".claim");
				char *l = state_path(s->logs, jid, ".jsonl");
				if (c != NULL)
					x->claim = read_json(c);
				if (l != NULL)
					x->progress = spool_last_event(l);
				free(c);
				free(l);
			} else if (x->state == SPOOL_DONE || x->state == SPOOL_FAILED) {
				char *r = state_path(dirs[i], jid, ".json");
				if (r != NULL)
					x->record = read_json(r);
				free(r);
			}
		}
		closedir(d);
	}
	if (n > 1)
		qsort(e, (size_t)n, sizeof *e, by_state);
	*out = e;
	return n;
}
