/* progress.c: progress events as JSON lines. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "spool/progress.h"
#include "spool/util.h"

void
progress_event_init(struct progress_event *e, const char *event, const char *job)
{
	memset(e, 0, sizeof *e);
	e->event = event;
	e->job = job;
	e->image = e->images = e->step = e->steps = -1;
	e->elapsed_s = e->eta_s = -1;
}

static double
round3(double x)
{
	return round(x * 1000.0) / 1000.0;
}

char *
progress_format(const struct progress_event *e)
{
	char when[40], *line, *s;
	json_t *o = json_object();
	size_t n;

	if (o == NULL)
		return NULL;
	util_rfc3339(util_now(), when, sizeof when);
	json_object_set_new(o, "time", json_string(when));
	json_object_set_new(o, "job", json_string(e->job ? e->job : ""));
	json_object_set_new(o, "event", json_string(e->event));
	if (e->image >= 0)
		json_object_set_new(o, "image", json_integer(e->image));
	if (e->images >= 0)
		json_object_set_new(o, "images", json_integer(e->images));
	if (e->step >= 0)
		json_object_set_new(o, "step", json_integer(e->step));
	if (e->steps >= 0)
		json_object_set_new(o, "steps", json_integer(e->steps));
	if (e->elapsed_s >= 0)
		json_object_set_new(o, "elapsed_s", json_real(round3(e->elapsed_s)));
	if (e->eta_s >= 0)
		json_object_set_new(o, "eta_s", json_real(round3(e->eta_s)));
	if (e->path != NULL)
		json_object_set_new(o, "path", json_string(e->path));
	if (e->error != NULL)
		json_object_set_new(o, "error", json_string(e->error));
	if (e->message != NULL)
		json_object_set_new(o, "message", json_string(e->message));
	s = json_dumps(o, SD_JSON_LINE);
	json_decref(o);
	if (s == NULL)
		return NULL;
	n = strlen(s);
	if ((line = realloc(s, n + 2)) == NULL) {
		free(s);
		return NULL;
	}
	line[n] = '\n';
	line[n + 1] = '\0';
	return line;
}

static void
write_line(int fd, const char *line)
{
	size_t n = strlen(line);

	/* One write: on an O_APPEND file lines of concurrent writers never
	 * interleave. */
	while (n > 0) {
		ssize_t r = write(fd, line, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return;
		line += r;
		n -= (size_t)r;
	}
}

int
progress_append(const char *log_path, const struct progress_event *e)
{
	char *line = progress_format(e);
	int fd;

	if (line == NULL)
		return -1;
	fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0) {
		free(line);
		return -1;
	}
	write_line(fd, line);
	close(fd);
	free(line);
	return 0;
}

void
progress_sink_init(struct progress_sink *s)
{
	memset(s, 0, sizeof *s);
	s->log_fd = -1;
	s->json_fd = -1;
}

int
progress_sink_open_log(struct progress_sink *s, const char *log_path)
{
	if (s->log_fd >= 0)
		close(s->log_fd);
	s->log_fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC |
	    O_NOFOLLOW, 0644);
	return s->log_fd >= 0 ? 0 : -1;
}

void
progress_sink_close(struct progress_sink *s)
{
	if (s->log_fd >= 0)
		close(s->log_fd);
	s->log_fd = -1;
}

void
progress_emit(struct progress_sink *s, const struct progress_event *e)
{
	char *line;

	if (s == NULL)
		return;
	if (s->log_fd >= 0 || s->json_fd >= 0) {
		if ((line = progress_format(e)) != NULL) {
			if (s->log_fd >= 0)
				write_line(s->log_fd, line);
			if (s->json_fd >= 0)
				write_line(s->json_fd, line);
			free(line);
		}
	}
	if (s->display != NULL)
		s->display(s->display_user, e);
}
