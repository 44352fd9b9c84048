/* tap.c: TAP output for the test programs. */
#include <stdarg.h>
#include <stdio.h>

#include "tap.h"

static int tap_count, tap_failures;

static void
vline(const char *prefix, const char *fmt, va_list ap)
{
	fputs(prefix, stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	fflush(stdout);
}

int
tap_ok(int cond, const char *fmt, ...)
{
	va_list ap;
	char prefix[64];

	tap_count++;
	if (!cond)
		tap_failures++;
	snprintf(prefix, sizeof prefix, "%s %d - ", cond ? "ok" : "not ok", tap_count);
	va_start(ap, fmt);
	vline(prefix, fmt, ap);
	va_end(ap);
	return cond;
}

void
tap_skip(const char *fmt, ...)
{
	va_list ap;

	tap_count++;
	printf("ok %d # SKIP ", tap_count);
	va_start(ap, fmt);
	vline("", fmt, ap);
	va_end(ap);
}

void
tap_diag(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vline("# ", fmt, ap);
	va_end(ap);
}

int
tap_done(void)
{
	printf("1..%d\n", tap_count);
	fflush(stdout);
	return tap_failures ? 1 : 0;
}

int
tap_skip_all(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vline("1..0 # SKIP ", fmt, ap);
	va_end(ap);
	return 0;
}

int
tap_reported(void)
{
	return tap_count;
}
