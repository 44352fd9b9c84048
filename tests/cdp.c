/* cdp.c: drive a headless chromium over the DevTools protocol (on a pipe,
 * --remote-debugging-pipe: fds 3 and 4, messages ending in a NUL) for the
 * gallery test: open URL, then evaluate a JavaScript EXPRESSION every
 * 200 ms until it is true, and print its last value.
 *
 *   cdp CHROMIUM PROFILE_DIR URL EXPRESSION TIMEOUT_S
 *
 * (chromium's own messages go to /dev/null unless CDP_VERBOSE is set)
 * Exit status: 0 the expression became true, 1 it did not in time,
 * 2 usage or chromium failed.  It links jansson only, never src/. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

static int to_chrome = -1, from_chrome = -1;
static char *inbuf;
static size_t inlen, incap;
static int next_id = 1;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int
send_msg(json_t *m)
{
	char *t = json_dumps(m, JSON_COMPACT);
	size_t n, off = 0;

	json_decref(m);
	if (t == NULL)
		return -1;
	n = strlen(t) + 1;	/* with its NUL */
	while (off < n) {
		ssize_t w = write(to_chrome, t + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			free(t);
			return -1;
		}
		off += (size_t)w;
	}
	free(t);
	return 0;
}

/* The next message (NULL at the deadline or end of input). */
static json_t *
recv_msg(double deadline)
{
	for (;;) {
		char *nul = inlen ? memchr(inbuf, '\0', inlen) : NULL;
		struct pollfd p = { from_chrome, POLLIN, 0 };
		double left;
		ssize_t r;

		if (nul != NULL) {
			size_t n = (size_t)(nul - inbuf) + 1;
			json_t *m = json_loads(inbuf, 0, NULL);
			if (getenv("CDP_VERBOSE") != NULL)
				fprintf(stderr, "cdp< %.300s\n", inbuf);
			memmove(inbuf, inbuf + n, inlen - n);
			inlen -= n;
			if (m != NULL)
				return m;
			continue;
		}
		left = deadline - now();
		if (left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) <= 0)
			return NULL;
		if (inlen + 65536 > incap) {
			char *nb = realloc(inbuf, incap + 65536 * 2);
			if (nb == NULL)
				return NULL;
			inbuf = nb;
			incap += 65536 * 2;
		}
		r = read(from_chrome, inbuf + inlen, incap - inlen);
		if (r <= 0)
			return NULL;
		inlen += (size_t)r;
	}
}

/* Send method(params) (in session when not NULL) and wait for its answer's
 * result (a new reference), or NULL. */
static json_t *
call(const char *session, const char *method, json_t *params, double deadline)
{
	int id = next_id++;
	json_t *m = json_pack("{s:i, s:s, s:o}", "id", id, "method", method,
	    "params", params ? params : json_object());

	if (session != NULL)
		json_object_set_new(m, "sessionId", json_string(session));
	if (send_msg(m) < 0)
		return NULL;
	for (;;) {
		json_t *a = recv_msg(deadline), *res;
		if (a == NULL)
			return NULL;
		if (json_integer_value(json_object_get(a, "id")) != id) {
			json_decref(a);
			continue;
		}
		res = json_incref(json_object_get(a, "result"));
		if (res == NULL) {
			char *e = json_dumps(json_object_get(a, "error"), JSON_COMPACT);
			fprintf(stderr, "cdp: %s failed: %s\n", method, e ? e : "?");
			free(e);
		}
		json_decref(a);
		return res;
	}
}

int
main(int argc, char **argv)
{
	int a[2], b[2], status = 1;
	double deadline;
	json_t *r;
	char *session = NULL, *target = NULL, last[4096] = "";
	pid_t pid;

	char profile[4200];

	if (argc != 6) {
		fprintf(stderr, "usage: cdp CHROMIUM PROFILE_DIR URL EXPRESSION TIMEOUT_S\n");
		return 2;
	}
	snprintf(profile, sizeof profile, "--user-data-dir=%s", argv[2]);
	deadline = now() + atof(argv[5]);
	if (pipe(a) < 0 || pipe(b) < 0)
		return 2;
	if ((pid = fork()) < 0)
		return 2;
	if (pid == 0) {
		/* fd 3: chromium reads commands; fd 4: it writes answers. */
		int r3 = dup(a[0]), w4 = dup(b[1]);
		if (r3 < 0 || w4 < 0 || dup2(r3, 3) < 0 || dup2(w4, 4) < 0)
			_exit(127);
		{
			int fds[6] = { a[0], a[1], b[0], b[1], r3, w4 }, i;
			for (i = 0; i < 6; i++)
				if (fds[i] != 3 && fds[i] != 4)
					close(fds[i]);
		}
		if (getenv("CDP_VERBOSE") == NULL) {
			int nul = open("/dev/null", O_WRONLY);
			if (nul >= 0 && nul != 3 && nul != 4) {
				dup2(nul, 2);
				close(nul);
			}
		}
		execl(argv[1], argv[1], "--headless", "--no-sandbox", "--disable-gpu",
		    "--disable-dev-shm-usage", "--no-first-run", "--remote-debugging-pipe",
		    profile, "about:blank", (char *)NULL);
		_exit(127);
	}
	close(a[0]);
	close(b[1]);
	to_chrome = a[1];
	from_chrome = b[0];
	signal(SIGPIPE, SIG_IGN);
	r = call(NULL, "Target.createTarget", json_pack("{s:s}", "url", argv[3]),
	    deadline);
	if (r == NULL || (target = strdup(json_string_value(json_object_get(r,
	    "targetId")) ? json_string_value(json_object_get(r, "targetId")) : "")) == NULL) {
		fprintf(stderr, "cdp: chromium did not open the page\n");
		status = 2;
		goto out;
	}
	json_decref(r);
	r = call(NULL, "Target.attachToTarget", json_pack("{s:s, s:b}", "targetId",
	    target, "flatten", 1), deadline);
	if (r == NULL || json_string_value(json_object_get(r, "sessionId")) == NULL) {
		fprintf(stderr, "cdp: cannot attach to the page\n");
		status = 2;
		goto out;
	}
	session = strdup(json_string_value(json_object_get(r, "sessionId")));
	json_decref(r);
	while (now() < deadline && session != NULL) {
		json_t *v;
		r = call(session, "Runtime.evaluate", json_pack("{s:s, s:b}",
		    "expression", argv[4], "returnByValue", 1), deadline);
		v = json_object_get(json_object_get(r, "result"), "value");
		if (v != NULL) {
			char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
			snprintf(last, sizeof last, "%s", t ? t : "");
			free(t);
		}
		if (json_is_true(v)) {
			status = 0;
			json_decref(r);
			break;
		}
		json_decref(r);
		usleep(200000);
	}
	printf("%s\n", last);
out:
	if (session != NULL)
		json_decref(call(NULL, "Browser.close", NULL, now() + 5));
	close(to_chrome);
	close(from_chrome);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	free(session);
	free(target);
	free(inbuf);
	return status;
}
