/* test_spool.c: the spool's folders, claims, stale claim recovery, submit
 * and cancel, without rendering.  Several processes race for one spool. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "spool/progress.h"
#include "spool/spool.h"
#include "spool/util.h"
#include "tap.h"

static char root[] = "/tmp/sdbatch-test-spool-XXXXXX";

static int
exists(const char *fmt, const char *id)
{
	char p[1024];
	struct stat st;

	snprintf(p, sizeof p, fmt, root, id);
	return lstat(p, &st) == 0;
}

static void
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f != NULL) {
		fputs(text, f);
		fclose(f);
	}
}

/* A claim file as another worker would write it. */
/* A claim as a worker of this boot and PID namespace (or of boot and
 * ns when given) writes it. */
static void
fake_claim_ns(const char *id, const char *host, long pid, double age,
    const char *boot, const char *ns, int deaths)
{
	char p[1024], text[1024];
	struct timespec ts[2];

	snprintf(p, sizeof p, "%s/running/%s.yaml", root, id);
	write_file(p, "prompt: x\n");
	snprintf(p, sizeof p, "%s/running/%s.claim", root, id);
	snprintf(text, sizeof text, "{\"host\": \"%s\", \"boot_id\": \"%s\", "
	    "\"pid_ns\": \"%s\", \"pid\": %ld, \"pid_start\": 0, "
	    "\"nonce\": \"n-%s\", \"deaths\": %d}\n", host,
	    boot ? boot : util_boot_id(), ns ? ns : util_pid_ns(), pid, id, deaths);
	write_file(p, text);
	clock_gettime(CLOCK_REALTIME, &ts[0]);
	ts[0].tv_sec -= (time_t)age;
	ts[1] = ts[0];
	utimensat(AT_FDCWD, p, ts, 0);
}

static void
fake_claim(const char *id, const char *host, long pid, double age)
{
	fake_claim_ns(id, host, pid, age, NULL, NULL, 0);
}

static void
basics(struct spool *s)
{
	struct spool_claim c;
	struct sd_error err;
	enum spool_state st;
	json_t *rec;
	char p[1024];
	int n;

	sd_error_clear(&err);
	tap_ok(spool_submit(s, "a1", "prompt: x\n", 10, &err) == 0 &&
	    exists("%s/incoming/%s.yaml", "a1"), "submit puts ID.yaml into incoming/");
	tap_ok(spool_submit(s, "a1", "prompt: y\n", 10, &err) < 0 &&
	    err.code == SD_EDATA && strstr(err.message, "exists already"),
	    "submit refuses an id that is queued");
	tap_ok(spool_submit(s, "../x", "prompt: y\n", 10, &err) < 0 &&
	    strstr(err.message, "not a valid job id"), "submit refuses a bad id");
	snprintf(p, sizeof p, "%s/tmp", root);
	tap_ok(rmdir(p) == 0 && mkdir(p, 0777) == 0, "submit leaves nothing in tmp/");

	/* Files that are not jobs are ignored. */
	snprintf(p, sizeof p, "%s/incoming/.hidden.yaml", root);
	write_file(p, "prompt: x\n");
	snprintf(p, sizeof p, "%s/incoming/notes.txt", root);
	write_file(p, "x");
	snprintf(p, sizeof p, "%s/incoming/half.yaml.tmp", root);
	write_file(p, "x");

	tap_ok(spool_claim_next(s, &c, &err) == 1 && strcmp(c.id, "a1") == 0 &&
	    exists("%s/running/%s.yaml", "a1") && exists("%s/running/%s.claim", "a1") &&
	    !exists("%s/incoming/%s.yaml", "a1"), "claim moves the job to running/ and "
	    "writes a claim");
	snprintf(p, sizeof p, "%s/running/a1.claim", root);
	{
		size_t len;
		char *text = util_read_file(p, 65536, 1, &len, NULL);
		json_t *j = text ? json_loads(text, 0, NULL) : NULL;
		tap_ok(j && json_integer_value(json_object_get(j, "pid")) == getpid() &&
		    strcmp(json_string_value(json_object_get(j, "host")),
		    util_hostname()) == 0 && json_object_get(j, "nonce") != NULL,
		    "the claim names host, pid and a nonce");
		json_decref(j);
		free(text);
	}
	n = spool_claim_next(s, &c, &err);
	tap_ok(n == 0, "nothing else to claim (dotfiles, *.tmp, *.txt ignored)");
	if (n == 1)
		spool_claim_free(&c);
	tap_ok(spool_find(s, "a1", NULL) == SPOOL_RUNNING, "find: running");
	tap_ok(spool_cancel(s, "a1", &st, &err) == 0 && st == SPOOL_RUNNING &&
	    exists("%s/running/%s.cancel", "a1"), "cancel of a running job leaves a request");
	{
		struct spool_claim cc;
		memset(&cc, 0, sizeof cc);
		snprintf(p, sizeof p, "%s/running/a1.cancel", root);
		cc.cancel_path = p;
		tap_ok(spool_cancel_requested(&cc), "the worker sees the request");
	}
	rec = spool_simple_record("a1", "done", 0, NULL);
	{
		char *text = json_dumps(rec, 0);
		tap_ok(spool_finish(s, &c, 0, text, strlen(text), NULL, 0, &err) == 0 &&
		    exists("%s/done/%s.yaml", "a1") && exists("%s/done/%s.json", "a1") &&
		    !exists("%s/running/%s.claim", "a1") &&
		    !exists("%s/running/%s.cancel", "a1"), "finish: done/ID.yaml + "
		    "ID.json, claim and request gone");
		free(text);
	}
	json_decref(rec);
	spool_claim_free(&c);
	tap_ok(spool_cancel(s, "a1", &st, &err) < 0 && err.code == SD_EDATA &&
	    strstr(err.message, "finished already"), "cancel of a finished job fails");
	tap_ok(spool_cancel(s, "zz", &st, &err) < 0 && err.code == SD_ENOINPUT,
	    "cancel of an unknown job fails");
	tap_ok(spool_submit(s, "a1", "prompt: y\n", 10, &err) < 0 &&
	    strstr(err.message, "(done)"), "submit refuses an id that is done");

	spool_submit(s, "q1", "prompt: x\n", 10, &err);
	tap_ok(spool_cancel(s, "q1", &st, &err) == 0 && st == SPOOL_QUEUED &&
	    exists("%s/failed/%s.yaml", "q1") && exists("%s/failed/%s.json", "q1") &&
	    !exists("%s/incoming/%s.yaml", "q1"), "cancel of a queued job: failed/ at once");
	snprintf(p, sizeof p, "%s/failed/q1.json", root);
	{
		size_t len;
		char *text = util_read_file(p, 65536, 1, &len, NULL);
		tap_ok(text && strstr(text, "\"cancelled\""), "its record says cancelled");
		free(text);
	}

	/* A bad name is claimed under a safe id. */
	snprintf(p, sizeof p, "%s/incoming/bad name;rm -rf.yaml", root);
	write_file(p, "prompt: x\n");
	tap_ok(spool_claim_next(s, &c, &err) == 1 && c.bad_name[0] != '\0' &&
	    util_valid_id(c.id) && strstr(c.bad_name, "not a valid job id"),
	    "a file with a bad name is claimed under a safe id");
	tap_diag("safe id: %s", c.id);
	spool_requeue(s, &c, &err);
	spool_claim_free(&c);
	/* drain it */
	while (spool_claim_next(s, &c, &err) == 1) {
		spool_finish(s, &c, 1, "{}", 2, NULL, 0, &err);
		spool_claim_free(&c);
	}
}

static void
recovery(struct spool *s)
{
	struct sd_error err;
	pid_t child;
	int n = -1, status;

	sd_error_clear(&err);
	/* Another host, fresh heartbeat: alive. */
	fake_claim("r1", "some-other-host", 1, 5);
	/* Another host, old heartbeat: stale. */
	fake_claim("r2", "some-other-host", 1, 400);
	/* This host, our own pid: alive. */
	fake_claim("r3", util_hostname(), (long)getpid(), 400);
	/* This host, a dead pid. */
	child = fork();
	if (child == 0)
		_exit(0);
	waitpid(child, &status, 0);
	fake_claim("r4", util_hostname(), (long)child, 0);
	/* A cancel request for a dead worker's job: it goes to failed/. */
	fake_claim("r5", util_hostname(), (long)child, 0);
	{
		char p[1024];
		snprintf(p, sizeof p, "%s/running/r5.cancel", root);
		write_file(p, "x");
	}
	tap_ok(spool_recover(s, 300, &n, &err) == 0 && n == 2, "recover requeues 2 "
	    "stale claims (got %d)", n);
	tap_ok(exists("%s/running/%s.yaml", "r1") && exists("%s/running/%s.claim", "r1"),
	    "another host with a fresh heartbeat keeps its claim");
	tap_ok(exists("%s/incoming/%s.yaml", "r2") && !exists("%s/running/%s.claim", "r2"),
	    "another host with an old heartbeat loses it");
	tap_ok(exists("%s/running/%s.yaml", "r3"), "a live pid on this host keeps it "
	    "whatever the heartbeat");
	tap_ok(exists("%s/incoming/%s.yaml", "r4"), "a dead pid on this host loses it");
	tap_ok(exists("%s/failed/%s.yaml", "r5") && exists("%s/failed/%s.json", "r5") &&
	    !exists("%s/running/%s.cancel", "r5"), "a dead worker's cancelled job goes "
	    "to failed/");
	tap_ok(exists("%s/logs/%s.jsonl", "r2"), "the requeue is in the progress log");
	{
		char p[1024];
		json_t *e;
		snprintf(p, sizeof p, "%s/logs/r2.jsonl", root);
		e = spool_last_event(p);
		tap_ok(e && strcmp(json_string_value(json_object_get(e, "event")),
		    "requeued") == 0 && strstr(json_string_value(json_object_get(e,
		    "error")), "no heartbeat"), "event requeued, with the reason");
		json_decref(e);
	}
	n = -1;
	spool_recover(s, 300, &n, &err);
	tap_ok(n == 0, "a second recovery finds nothing");
	/* A job in running/ without a claim, older than the stale age. */
	{
		char p[1024];
		snprintf(p, sizeof p, "%s/running/r6.yaml", root);
		write_file(p, "prompt: x\n");
		n = -1;
		spool_recover(s, 300, &n, &err);
		tap_ok(n == 0 && exists("%s/running/%s.yaml", "r6"),
		    "a just-claimed job without its claim file yet is left alone");
		sleep(1);
		spool_recover(s, 0.5, &n, &err);
		tap_ok(n == 2 && exists("%s/incoming/%s.yaml", "r6") &&
		    exists("%s/incoming/%s.yaml", "r1") &&
		    exists("%s/running/%s.yaml", "r3"), "one without a claim for longer "
		    "than the stale age is requeued (and r1, heartbeat now too old)");
	}
}

/* Several processes claim from one spool: every job exactly once. */
static void
race(struct spool *s)
{
	enum { JOBS = 60, WORKERS = 4 };
	struct sd_error err;
	int fds[2], i, counts[JOBS] = { 0 }, total = 0, dup = 0;
	char buf[64];
	FILE *in;

	for (i = 0; i < JOBS; i++) {
		char id[32];
		snprintf(id, sizeof id, "race%02d", i);
		spool_submit(s, id, "prompt: x\n", 10, &err);
	}
	if (pipe(fds) < 0) {
		tap_skip("no pipe");
		return;
	}
	for (i = 0; i < WORKERS; i++) {
		if (fork() == 0) {
			struct spool_claim c;
			struct sd_error e;
			close(fds[0]);
			while (spool_claim_next(s, &c, &e) == 1) {
				dprintf(fds[1], "%s\n", c.id);
				spool_finish(s, &c, 0, "{}", 2, NULL, 0, &e);
				spool_claim_free(&c);
			}
			_exit(0);
		}
	}
	close(fds[1]);
	in = fdopen(fds[0], "r");
	while (fgets(buf, sizeof buf, in) != NULL) {
		int k = atoi(buf + 4);
		if (strncmp(buf, "race", 4) == 0 && k >= 0 && k < JOBS) {
			if (counts[k]++ > 0)
				dup++;
			total++;
		}
	}
	fclose(in);
	while (wait(NULL) > 0)
		;
	tap_ok(total == JOBS && dup == 0, "%d processes claimed %d jobs: %d claims, "
	    "%d twice", WORKERS, JOBS, total, dup);
	for (i = 0, total = 0; i < JOBS; i++) {
		char id[32];
		snprintf(id, sizeof id, "race%02d", i);
		total += spool_find(s, id, NULL) == SPOOL_DONE;
	}
	tap_ok(total == JOBS, "all %d in done/", JOBS);
}

static void
listing(struct spool *s)
{
	struct spool_entry *e;
	struct sd_error err;
	int n, i, q = 0, r = 0, d = 0, f = 0;

	n = spool_list(s, NULL, &e, &err);
	for (i = 0; i < n; i++) {
		q += e[i].state == SPOOL_QUEUED;
		r += e[i].state == SPOOL_RUNNING;
		d += e[i].state == SPOOL_DONE;
		f += e[i].state == SPOOL_FAILED;
	}
	tap_ok(n > 0 && d >= 64 && r == 1 && q == 0 && f >= 3, "list: %d queued, %d "
	    "running, %d done, %d failed", q, r, d, f);
	spool_list_free(e, n);
	n = spool_list(s, "r3", &e, &err);
	tap_ok(n == 1 && e[0].state == SPOOL_RUNNING && e[0].claim != NULL,
	    "list one running job, with its claim");
	spool_list_free(e, n);
}

static char *
slurp(const char *fmt, const char *id)
{
	char p[1024];

	snprintf(p, sizeof p, fmt, root, id);
	return util_read_file(p, 1 << 20, 0, NULL, NULL);
}

static int
contains(const char *fmt, const char *id, const char *what)
{
	char *t = slurp(fmt, id);
	int r = t != NULL && strstr(t, what) != NULL;

	free(t);
	return r;
}

/* Issue 15: every step after the claim checks that the claim is still
 * ours; pids are trusted only within one boot and PID namespace; a
 * requeue never replaces a queued job; worker deaths are counted; a
 * finish that cannot write its record never leaves the job claimed. */
static void
ownership(struct spool *s)
{
	struct spool_claim c;
	struct sd_error err;
	struct stat st;
	char p[1024], q[1024], inst[33];
	pid_t child;
	int status, n;

	sd_error_clear(&err);
	/* 1. A claim taken over by another worker. */
	spool_submit(s, "o1", "prompt: x\n", 10, &err);
	tap_ok(spool_claim_id(s, "o1", &c, &err) == 1, "o1 claimed");
	snprintf(p, sizeof p, "%s/running/o1.claim", root);
	write_file(p, "{\"host\":\"elsewhere\",\"pid\":1,\"nonce\":\"theirs\"}\n");
	{
		struct timespec ts[2] = { { 1000, 0 }, { 1000, 0 } };
		utimensat(AT_FDCWD, p, ts, 0);
	}
	tap_ok(spool_heartbeat(&c) < 0 && lstat(p, &st) == 0 &&
	    st.st_mtim.tv_sec == 1000, "the heartbeat of a lost claim fails and "
	    "touches the new owner's claim not");
	tap_ok(!spool_claim_held(&c), "the claim is no longer held");
	tap_ok(spool_finish(s, &c, 0, "{}", 2, NULL, 0, &err) < 0 &&
	    err.code == SD_EREQUEUED && c.lost, "finish of a lost claim stands down");
	tap_ok(exists("%s/running/%s.yaml", "o1") && !exists("%s/done/%s.json", "o1") &&
	    contains("%s/running/%s.claim", "o1", "theirs"),
	    "the job, the new claim and done/ are untouched");
	sd_error_clear(&err);
	tap_ok(spool_requeue(s, &c, &err) < 0 && err.code == SD_EREQUEUED &&
	    exists("%s/running/%s.yaml", "o1") && !exists("%s/incoming/%s.yaml", "o1"),
	    "requeue of a lost claim stands down too");
	spool_claim_free(&c);
	unlink(p);
	snprintf(p, sizeof p, "%s/running/o1.yaml", root);
	unlink(p);

	/* 2. Same host name, but another PID namespace or boot: the pid
	 * proves nothing (our own pid is alive), the heartbeat's age tells. */
	fake_claim_ns("n1", util_hostname(), (long)getpid(), 400, NULL,
	    "pid:[1]", 0);
	fake_claim_ns("n2", util_hostname(), (long)getpid(), 400, "another-boot",
	    NULL, 0);
	fake_claim_ns("n3", util_hostname(), (long)getpid(), 0, NULL, "pid:[1]", 0);
	fake_claim_ns("n4", util_hostname(), (long)getpid(), 400, NULL, NULL, 0);
	n = -1;
	spool_recover(s, 300, &n, &err);
	tap_ok(n == 2 && exists("%s/incoming/%s.yaml", "n1") &&
	    exists("%s/incoming/%s.yaml", "n2"), "another PID namespace or boot "
	    "with an old heartbeat: stale although the pid is alive here (%d)", n);
	tap_ok(exists("%s/running/%s.claim", "n3"), "another PID namespace with a "
	    "fresh heartbeat: kept");
	tap_ok(exists("%s/running/%s.claim", "n4"), "this namespace and a live pid: "
	    "kept whatever the heartbeat");
	tap_ok(contains("%s/logs/%s.jsonl", "n1", "another boot or PID namespace"),
	    "the reason names the namespace");

	/* 4. A requeue never replaces a newer job of the same id. */
	spool_submit(s, "rq1", "prompt: old\n", 12, &err);
	spool_claim_id(s, "rq1", &c, &err);
	snprintf(p, sizeof p, "%s/incoming/rq1.yaml", root);
	write_file(p, "prompt: newer\n");
	tap_ok(spool_requeue(s, &c, &err) < 0 && err.code == SD_EDATA,
	    "requeue over a newer queued job of the id fails (%s)", err.message);
	tap_ok(contains("%s/incoming/%s.yaml", "rq1", "newer") &&
	    contains("%s/failed/%s.yaml", "rq1", "old") &&
	    contains("%s/failed/%s.json", "rq1", "newer job rq1"),
	    "the newer job stays queued; the old one is in failed/ with the reason");
	spool_claim_free(&c);
	child = fork();
	if (child == 0)
		_exit(0);
	waitpid(child, &status, 0);
	fake_claim("rq2", util_hostname(), (long)child, 0);
	snprintf(p, sizeof p, "%s/incoming/rq2.yaml", root);
	write_file(p, "prompt: newer\n");
	spool_recover(s, 300, &n, &err);
	tap_ok(contains("%s/incoming/%s.yaml", "rq2", "newer") &&
	    exists("%s/failed/%s.yaml", "rq2") && !exists("%s/running/%s.yaml", "rq2"),
	    "recovery does not replace a newer queued job either");

	/* 5. Worker deaths are counted across requeues; at max_deaths the
	 * job goes to failed/ with the reason. */
	fake_claim_ns("d1", util_hostname(), (long)child, 0, NULL, NULL, 0);
	spool_recover(s, 300, &n, &err);
	tap_ok(exists("%s/incoming/%s.yaml", "d1") &&
	    exists("%s/incoming/.%s.state", "d1"), "first death: requeued, with "
	    "its count");
	tap_ok(spool_claim_id(s, "d1", &c, &err) == 1 && c.deaths == 1 &&
	    !exists("%s/incoming/.%s.state", "d1") &&
	    contains("%s/running/%s.claim", "d1", "\"deaths\":1"),
	    "the next claim carries it (deaths %d)", c.deaths);
	memcpy(inst, c.instance, sizeof inst);
	/* Its worker dies too. */
	snprintf(p, sizeof p, "%s/running/d1.claim", root);
	{
		char *t = slurp("%s/running/%s.claim", "d1"), *pid, text[1200];
		pid = t ? strstr(t, "\"pid\":") : NULL;
		if (pid != NULL) {
			snprintf(text, sizeof text, "%.*s\"pid\":%ld%s", (int)(pid - t), t,
			    (long)child, strchr(pid, ','));
			write_file(p, text);
		}
		free(t);
	}
	spool_claim_free(&c);
	spool_recover(s, 300, &n, &err);
	tap_ok(exists("%s/failed/%s.yaml", "d1") &&
	    contains("%s/failed/%s.json", "d1", "died 2 times"),
	    "second death (max_worker_deaths 2): failed/, saying why");
	tap_ok(inst[0] != '\0', "the instance id survived the requeue");

	/* 3. A finish that cannot write its record requeues the job, and
	 * after max_deaths such failures fails it; never left claimed. */
	spool_submit(s, "f1", "prompt: x\n", 10, &err);
	spool_claim_id(s, "f1", &c, &err);
	snprintf(p, sizeof p, "%s/done", root);
	snprintf(q, sizeof q, "%s/done.away", root);
	rename(p, q);
	tap_ok(spool_finish(s, &c, 0, "{}", 2, NULL, 0, &err) < 0 &&
	    err.code == SD_EIO && exists("%s/incoming/%s.yaml", "f1") &&
	    !exists("%s/running/%s.yaml", "f1") && !exists("%s/running/%s.claim", "f1"),
	    "record not writable: requeued, not left claimed (%s)", err.message);
	spool_claim_free(&c);
	spool_claim_id(s, "f1", &c, &err);
	tap_ok(c.deaths == 1 && spool_finish(s, &c, 0, "{}", 2, NULL, 0, &err) < 0 &&
	    exists("%s/failed/%s.yaml", "f1") &&
	    contains("%s/failed/%s.json", "f1", "could not be written"),
	    "the second time: failed/ with the reason");
	spool_claim_free(&c);
	rename(q, p);
}

int
main(void)
{
	struct spool s;
	struct sd_error err;
	char cmd[300];

	if (mkdtemp(root) == NULL)
		return tap_skip_all("cannot create a temporary folder");
	sd_error_clear(&err);
	tap_ok(spool_open(&s, root, 0, &err) < 0 && err.code == SD_ENOINPUT,
	    "an empty folder is not a spool without create");
	tap_ok(spool_open(&s, root, 1, &err) == 0, "spool_open creates the folders");
	basics(&s);
	recovery(&s);
	race(&s);
	listing(&s);
	ownership(&s);
	spool_close(&s);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
	if (system(cmd) != 0)
		tap_diag("cannot remove %s", root);
	return tap_done();
}
