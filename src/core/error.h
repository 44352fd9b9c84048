/* error.h: how sdbatch reports errors.
 *
 * A function that can fail returns -1 (or NULL) and fills a struct sd_error
 * that the caller may show.  The code is one of the exit statuses of the
 * command line (SPEC.md), so that the top level can exit with it directly. */
#ifndef SD_ERROR_H
#define SD_ERROR_H

#include <stddef.h>

enum sd_status {
	SD_OK = 0,
	SD_EUSAGE = 64,		/* EX_USAGE: bad command line */
	SD_EDATA = 65,		/* EX_DATAERR: bad job data, bad model file */
	SD_ENOINPUT = 66,	/* EX_NOINPUT: a missing input file */
	SD_EUNAVAILABLE = 69,	/* EX_UNAVAILABLE: e.g. no GPU */
	SD_EINTERNAL = 70,	/* EX_SOFTWARE: a bug or out of memory */
	SD_EIO = 74,		/* EX_IOERR */
	SD_EREQUEUED = 75,	/* EX_TEMPFAIL: interrupted and requeued */
	SD_ECONFIG = 78,	/* EX_CONFIG: bad configuration */
};

#define SD_ERROR_MAX 1024

struct sd_error {
	int code;			/* enum sd_status */
	char message[SD_ERROR_MAX];
	char field[128];		/* the job field to blame, if any, else "" */
};

/* Fill err (when not NULL) with code and a printf-style message; returns -1,
 * so that `return sd_fail(err, SD_EDATA, "...")` reads naturally. */
int sd_fail(struct sd_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prefix err's message with "prefix: " (e.g. a file name). Returns -1. */
int sd_error_prefix(struct sd_error *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Reset err to "no error". */
void sd_error_clear(struct sd_error *err);

#endif
