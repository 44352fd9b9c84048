/* server.h: `sdbatch serve`: the HTTP API, server-sent events and the
 * gallery in front of a spool (libmicrohttpd, a thread a connection).
 *
 *   GET    /healthz                   {"status": "ok"} (never needs the token)
 *   GET    /                          the gallery page (gallery.h)
 *   GET    /v1/jobs                   the jobs: id and status
 *   POST   /v1/jobs                   a job as JSON (the job file's fields) or
 *                                     {"operation": {"type": "SDGenerate", ...}}
 *                                     -> 202 {"job_id", "stream_url", "status_url"}
 *   GET    /v1/jobs/ID                status; the result record when finished
 *   GET    /v1/jobs/ID/stream         server-sent events from SPOOL/logs/ID.jsonl
 *   GET    /v1/jobs/ID/images/N.png   image N
 *   DELETE /v1/jobs/ID                cancel
 *
 * The spool stays the queue: the server only submits (spool_submit_job, the
 * path of `sdbatch submit`), reads records and logs, and cancels.  Bound to
 * 127.0.0.1 unless told otherwise; on any other address every route but
 * /healthz needs "Authorization: Bearer TOKEN" (serve.token, else
 * $SDBATCH_SERVE_TOKEN), compared in constant time. */
#ifndef SD_WEB_SERVER_H
#define SD_WEB_SERVER_H

#include "core/error.h"
#include "spool/conf.h"

struct web_server;

/* Start serving the spool at root on listen ("ADDR:PORT", "[ADDR]:PORT";
 * NULL: cfg->serve.listen, else 127.0.0.1:8080; port 0 picks a free one).
 * cfg must outlive the server.  verbose: one line on stderr a request.
 * Errors: SD_ECONFIG (a bad address, no token for a public address),
 * SD_EUNAVAILABLE (cannot listen), SD_ENOINPUT (no such spool). */
struct web_server *web_start(const char *root, const struct sd_config *cfg,
    const char *listen, int verbose, struct sd_error *err);

/* The base URL it listens on ("http://127.0.0.1:8080"). */
const char *web_url(const struct web_server *w);

/* Stop: end the event streams, close the connections, free w. */
void web_stop(struct web_server *w);

#endif
