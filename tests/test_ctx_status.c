/* test_ctx_status.c: an op that fails (out of memory) sets a sticky status
 * on its context instead of exiting; every later op is skipped; the status
 * says what failed and can be cleared (issue 15, item 5). */
#include "config.h"

#include <stdint.h>
#include <string.h>

#include "core/ops.h"
#include "tap.h"

/* Under AddressSanitizer an impossible allocation returns NULL as it does
 * without (instead of aborting the test). */
const char *__asan_default_options(void);
const char *
__asan_default_options(void)
{
	return "allocator_may_return_null=1";
}

int
main(void)
{
	struct sd_error err;
	struct sd_ctx *c;
	float a[4] = { 1, 2, 3, 4 }, b[4] = { 10, 20, 30, 40 }, y[4] = { 0 };
	float *big, *p;

	sd_error_clear(&err);
	if ((c = sd_ctx_new("cpu", 1, &err)) == NULL)
		return tap_skip_all("no CPU context: %s", err.message);
	tap_ok(sd_ctx_status(c, &err) == 0, "a new context has no error");
	op_add(c, y, a, b, 4);
	tap_ok(y[0] == 11 && y[3] == 44, "ops run");

	/* More than any machine has: the arena cannot grow. */
	big = sd_alloc(c, (size_t)1 << 58);
	tap_ok(big != NULL, "sd_alloc out of memory returns (no exit), not NULL");
	tap_ok(sd_ctx_status(c, &err) < 0 && err.code == SD_EINTERNAL &&
	    strstr(err.message, "out of cpu memory") != NULL,
	    "the context's status says out of memory: %s", err.message);
	memset(y, 0, sizeof y);
	op_add(c, y, a, b, 4);
	op_scale(c, y, 2.0f, 4);
	sd_upload(c, big, a, 4);
	sd_download(c, y, big, 4);
	tap_ok(y[0] == 0 && y[3] == 0, "every later op (and transfer) is skipped");
	p = sd_alloc(c, 4);
	tap_ok(p != NULL, "sd_alloc after a failure still returns memory no op touches");
	sd_ctx_fail(c, SD_EUNAVAILABLE, "a second error");
	tap_ok(sd_ctx_status(c, &err) < 0 && strstr(err.message, "out of cpu") != NULL,
	    "the first error is the one kept");
	sd_ctx_clear_status(c);
	tap_ok(sd_ctx_status(c, &err) == 0, "cleared");
	p = sd_alloc(c, 4);
	sd_upload(c, p, a, 4);
	op_add(c, y, p, b, 4);
	tap_ok(y[0] == 11 && y[3] == 44, "ops run again after the status is cleared");
	sd_ctx_free(c);
	return tap_done();
}
