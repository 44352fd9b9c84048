/* error.c: filling struct sd_error. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"

int
sd_fail(struct sd_error *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return -1;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof err->message, fmt, ap);
	va_end(ap);
	return -1;
}

int
sd_error_prefix(struct sd_error *err, const char *fmt, ...)
{
	char prefix[SD_ERROR_MAX], old[SD_ERROR_MAX];
	va_list ap;

	if (err == NULL)
		return -1;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof prefix, fmt, ap);
	va_end(ap);
	memcpy(old, err->message, sizeof old);
	size_t n = strnlen(prefix, sizeof err->message - 3);
	memcpy(err->message, prefix, n);
	memcpy(err->message + n, ": ", 2);
	snprintf(err->message + n + 2, sizeof err->message - n - 2, "%s", old);
	return -1;
}

void
sd_error_clear(struct sd_error *err)
{
	if (err != NULL)
		memset(err, 0, sizeof *err);
}
