/* testutil.c: finding shared/ and comparing tensors with the goldens. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/ops.h"
#include "testutil.h"

const char *
shared_dir(void)
{
	static char dir[4096];
	const char *env = getenv("SDBATCH_SHARED");
	struct stat st;

	if (dir[0] != '\0')
		return dir;
	snprintf(dir, sizeof dir, "%s", env && *env ? env : "../shared");
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		dir[0] = '\0';
		return NULL;
	}
	return dir;
}

const char *
shared_path(const char *rel)
{
	static char path[8][4096];
	static int next;
	const char *dir = shared_dir();
	char *p;

	if (dir == NULL)
		return NULL;
	p = path[next++ % 8];
	snprintf(p, sizeof path[0], "%s/%s", dir, rel);
	return p;
}

struct st_file *
golden_open(const char *name)
{
	return golden_open_in("sd15-tiny", name);
}

struct st_file *
golden_open_in(const char *set, const char *name)
{
	char rel[512];
	struct sd_error err = {0};
	const char *path;
	struct st_file *f;

	snprintf(rel, sizeof rel, "testdata/%s/goldens/%s.safetensors", set, name);
	path = shared_path(rel);
	if (path == NULL)
		return NULL;
	f = st_open(path, &err);
	if (f == NULL)
		tap_diag("%s", err.message);
	return f;
}

float *
golden_f32(struct st_file *g, const char *name, size_t *n)
{
	const struct sd_tensor *t = st_find(g, name);
	size_t count;
	float *out;

	if (t == NULL) {
		tap_ok(0, "golden tensor %s present in %s", name, st_path(g));
		exit(tap_done());
	}
	count = (size_t)sd_tensor_numel(t);
	out = malloc((count ? count : 1) * sizeof *out);
	if (out == NULL)
		abort();
	if (t->dtype == SD_I32) {
		for (size_t i = 0; i < count; i++)
			out[i] = (float)((const int32_t *)t->data)[i];
	} else if (t->dtype == SD_U8) {
		for (size_t i = 0; i < count; i++)
			out[i] = (float)((const uint8_t *)t->data)[i];
	} else if (t->dtype == SD_I64) {
		for (size_t i = 0; i < count; i++)
			out[i] = (float)((const int64_t *)t->data)[i];
	} else {
		sd_convert_to_f32(out, t->data, t->dtype, count);
	}
	if (n != NULL)
		*n = count;
	return out;
}

struct sd_weights *
weights_subset(const struct st_file *f, const char *prefix, const char *skip,
    const struct sd_tensor *replace)
{
	struct sd_weights *w = weights_new();

	for (int i = 0; i < st_count(f); i++) {
		const struct sd_tensor *t = st_tensor(f, i);
		if (strncmp(t->name, prefix, strlen(prefix)) != 0)
			continue;
		if (skip != NULL && strncmp(t->name, skip, strlen(skip)) == 0) {
			if (replace != NULL && strcmp(t->name, skip) == 0)
				weights_put(w, t->name, replace);
			continue;
		}
		weights_put(w, t->name, t);
	}
	return w;
}

int
check_close(const char *what, const float *got, const float *want, size_t n,
    double atol, double rtol)
{
	double maxdiff = 0, worst = 0;
	size_t bad = 0, at = 0;

	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)got[i] - (double)want[i]);
		double lim = atol + rtol * fabs((double)want[i]);
		if (!(d <= lim)) {	/* NaN counts as bad */
			if (bad == 0)
				at = i;
			bad++;
		}
		if (d > maxdiff || d != d)
			maxdiff = d;
		if (lim > 0 && d / lim > worst)
			worst = d / lim;
	}
	if (bad)
		tap_diag("%s: %zu of %zu elements out of tolerance; first at %zu: got %.8g want %.8g",
		    what, bad, n, at, got[at], want[at]);
	return tap_ok(bad == 0, "%s (max abs diff %.3g, %.2f of tolerance, atol %g rtol %g)",
	    what, maxdiff, worst, atol, rtol);
}

const char *
test_device(void)
{
	const char *d = getenv("SDBATCH_TEST_DEVICE");

	return d != NULL && *d != '\0' ? d : "cpu";
}

struct sd_ctx *
test_ctx_new(void)
{
	struct sd_error err = {0};
	struct sd_ctx *c = sd_ctx_new(test_device(), 0, &err);

	if (c != NULL) {
		tap_diag("backend: %s", sd_ctx_describe(c));
		return c;
	}
	if (err.code == SD_EUNAVAILABLE) {
		if (tap_reported() == 0) {
			tap_skip_all("%s: %s", test_device(), err.message);
			exit(0);
		}
		tap_skip("the rest: %s: %s", test_device(), err.message);
		exit(tap_done());
	}
	tap_ok(0, "%s context: %s", test_device(), err.message);
	exit(tap_done());
}
