/* progress.h: progress events as JSON lines (SPOOL/logs/ID.jsonl and
 * `sdbatch run --progress json`), and the sinks that receive them.
 *
 * One object a line, written with a single write(2) on an O_APPEND file
 * and so flushed at once: time (RFC 3339 UTC), job, event (claimed,
 * loading, step, image, done, failed, requeued, cancelled, warning) and
 * where they apply image (0-based), images, step (1-based), steps,
 * elapsed_s, eta_s, path, error, message (what a warning says: a LoRA that
 * matched in part, a plain prompt cut at 77 tokens). */
#ifndef SD_SPOOL_PROGRESS_H
#define SD_SPOOL_PROGRESS_H

struct progress_event {
	const char *event;
	const char *job;
	int image, images;	/* -1: not given */
	int step, steps;	/* -1: not given */
	double elapsed_s, eta_s;	/* < 0: not given */
	const char *path;	/* NULL: not given */
	const char *error;	/* NULL: not given */
	const char *message;	/* NULL: not given */
};

/* An event with only event and job set. */
void progress_event_init(struct progress_event *e, const char *event,
    const char *job);

/* The event as one JSON line ending in '\n' (malloc'd). */
char *progress_format(const struct progress_event *e);

/* Append the event to a log file (created 0644 when missing). */
int progress_append(const char *log_path, const struct progress_event *e);

/* Where the events of one job go. */
struct progress_sink {
	int log_fd;		/* the job's log (O_APPEND), or -1 */
	int json_fd;		/* JSON lines to this fd (stderr), or -1 */
	/* a progress bar or other display, or NULL */
	void (*display)(void *user, const struct progress_event *e);
	void *display_user;
};

void progress_sink_init(struct progress_sink *s);
/* Open the job's log for appending. */
int progress_sink_open_log(struct progress_sink *s, const char *log_path);
void progress_sink_close(struct progress_sink *s);
/* Send e to every sink. */
void progress_emit(struct progress_sink *s, const struct progress_event *e);

#endif
