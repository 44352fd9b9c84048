/* test_rng.c: torch's CPU and CUDA normal generators against reference
 * draws (goldens/torch_randn*, testdata/rng/philox.safetensors). */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sample/rng.h"
#include "testutil.h"

static const unsigned long long seeds[] = {0, 42, 1234567};

static const struct {
	const char *name;
	size_t n;
} shapes[] = {
	{"1x4x64x64", 4 * 64 * 64}, {"1x4x8x8", 4 * 8 * 8}, {"7", 7},
	{"16", 16}, {"33", 33},
};

/* Bitwise comparison (0 and -0 aside), with the worst difference shown. */
static int
check_exact(const char *what, const float *got, const float *want, size_t n)
{
	size_t bad = 0, at = 0;
	double maxdiff = 0;

	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)got[i] - (double)want[i]);
		if (!(got[i] == want[i])) {
			if (bad++ == 0)
				at = i;
		}
		if (d > maxdiff || d != d)
			maxdiff = d;
	}
	if (bad)
		tap_diag("%s: %zu of %zu differ; first at %zu: got %.9g want %.9g",
		    what, bad, n, at, got[at], want[at]);
	return tap_ok(bad == 0, "%s bit-exact (%zu values, max abs diff %.3g)",
	    what, n, maxdiff);
}

static void
test_cpu(const char *file, enum sd_rng_math math, int all_large)
{
	struct st_file *g = golden_open(file);
	char name[64], what[128];

	if (g == NULL) {
		tap_skip("%s: golden file not found", file);
		return;
	}
	for (size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++) {
		for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
			struct sd_rng *r;
			float *want, *got;
			size_t n;

			snprintf(name, sizeof name, "seed%llu_%s", seeds[s], shapes[k].name);
			if (!all_large && st_find(g, name) == NULL)
				continue;	/* the scalar file has one large case */
			want = golden_f32(g, name, &n);
			got = malloc(n * sizeof *got);
			r = sd_rng_new_math(SD_RNG_CPU, seeds[s], math);
			if (got == NULL || r == NULL)
				abort();
			sd_rng_randn(r, got, n);
			snprintf(what, sizeof what, "%s %s", file, name);
			if (n != shapes[k].n)
				tap_ok(0, "%s has %zu elements", what, n);
			else
				check_exact(what, got, want, n);
			sd_rng_free(r);
			free(got);
			free(want);
		}
	}
	st_close(g);
}

/* seq*: draws [7],[7],[16],[3],[1,4,8,8],[33] from one generator seeded 0. */
static void
test_cpu_sequence(void)
{
	static const size_t sizes[] = {7, 7, 16, 3, 256, 33};
	struct st_file *g = golden_open("torch_randn");
	struct sd_rng *r;
	char name[64], what[128];
	int found = 0;

	if (g == NULL) {
		tap_skip("torch_randn sequence: golden file not found");
		return;
	}
	for (int i = 0; i < st_count(g); i++)
		found += strncmp(st_tensor(g, i)->name, "seq", 3) == 0;
	tap_ok(found == 6, "torch_randn has 6 seq* tensors (found %d)", found);
	r = sd_rng_new(SD_RNG_CPU, 0);
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		const struct sd_tensor *t = NULL;
		float *want, *got;
		size_t n;

		/* the names are seq<k>_<shape>; find the k-th by prefix */
		snprintf(name, sizeof name, "seq%zu_", k);
		for (int i = 0; i < st_count(g); i++)
			if (strncmp(st_tensor(g, i)->name, name, strlen(name)) == 0)
				t = st_tensor(g, i);
		if (t == NULL) {
			tap_ok(0, "torch_randn has a tensor %s*", name);
			continue;
		}
		want = golden_f32(g, t->name, &n);
		got = malloc(n * sizeof *got);
		if (got == NULL)
			abort();
		sd_rng_randn(r, got, n);
		snprintf(what, sizeof what, "torch_randn %s (draw %zu of one generator)",
		    t->name, k + 1);
		if (n != sizes[k])
			tap_ok(0, "%s has %zu elements, want %zu", what, n, sizes[k]);
		else
			check_exact(what, got, want, n);
		free(got);
		free(want);
	}
	sd_rng_free(r);
	st_close(g);
}

static void
test_philox(void)
{
	static const unsigned long long pseeds[] = {0, 42, 1234567, 4294967297ull};
	static const char *const firsts[] = {"1x4x64x64", "7", "16", "33"};
	struct sd_error err = {0};
	const char *path = shared_path("testdata/rng/philox.safetensors");
	struct st_file *g;
	char name[64], what[128];
	int checked = 0;

	if (path == NULL || (g = st_open(path, &err)) == NULL) {
		tap_skip("philox: %s", path ? err.message : "shared/ not found");
		return;
	}
	for (size_t s = 0; s < sizeof pseeds / sizeof pseeds[0]; s++) {
		for (size_t k = 0; k < sizeof firsts / sizeof firsts[0]; k++) {
			struct sd_rng *r = sd_rng_new(SD_RNG_CUDA, pseeds[s]);
			float *want, *got;
			size_t n;

			snprintf(name, sizeof name, "seed%llu_%s", pseeds[s], firsts[k]);
			want = golden_f32(g, name, &n);
			got = malloc(n * sizeof *got);
			if (got == NULL || r == NULL)
				abort();
			sd_rng_randn(r, got, n);
			snprintf(what, sizeof what, "philox %s", name);
			check_close(what, got, want, n, 2e-6, 0);
			checked++;
			free(got);
			free(want);
			sd_rng_free(r);
		}
		/* two consecutive draws from one generator */
		struct sd_rng *r = sd_rng_new(SD_RNG_CUDA, pseeds[s]);
		for (int call = 1; call <= 2; call++) {
			float *want, *got;
			size_t n;

			snprintf(name, sizeof name, "seed%llu_call%d_1x4x8x8", pseeds[s], call);
			want = golden_f32(g, name, &n);
			got = malloc(n * sizeof *got);
			if (got == NULL)
				abort();
			sd_rng_randn(r, got, n);
			snprintf(what, sizeof what, "philox %s", name);
			check_close(what, got, want, n, 2e-6, 0);
			checked++;
			free(got);
			free(want);
		}
		sd_rng_free(r);
	}
	/* torch's own documented CUDA output for seed 0, shape (3, 4) */
	{
		struct sd_rng *r = sd_rng_new(SD_RNG_CUDA, 0);
		float got[12], *want;
		size_t n;

		want = golden_f32(g, "documented_seed0_3x4", &n);
		sd_rng_randn(r, got, 12);
		if (n == 12)
			check_close("philox documented_seed0_3x4 (torch's own output)",
			    got, want, n, 2e-6, 0);
		else
			tap_ok(0, "documented_seed0_3x4 has 12 elements");
		checked++;
		free(want);
		sd_rng_free(r);
	}
	tap_ok(checked == st_count(g), "every philox tensor checked (%d of %d)",
	    checked, st_count(g));
	st_close(g);
}

/* Properties that hold without reference data. */
static void
test_properties(void)
{
	struct sd_rng *a = sd_rng_new(SD_RNG_CPU, 5), *b = sd_rng_new(SD_RNG_CPU, 5);
	float x[40], y[40];
	double sum = 0, sq = 0;
	static float big[1 << 16];

	/* MT19937 reference: the 10000th output for seed 5489 is 4123659995 */
	sd_rng_seed(a, 5489);
	uint32_t v = 0;
	for (int i = 0; i < 10000; i++)
		v = sd_rng_random32(a);
	tap_ok(v == 4123659995u, "MT19937 10000th output for seed 5489 (%u)", v);

	sd_rng_seed(a, 5);
	sd_rng_randn(a, x, 40);
	sd_rng_randn(b, y, 40);
	tap_ok(memcmp(x, y, sizeof x) == 0, "same seed, same draws");
	sd_rng_seed(b, 5 + (1ull << 32));
	sd_rng_randn(b, y, 40);
	tap_ok(memcmp(x, y, sizeof x) == 0, "the CPU generator uses the low 32 bits of the seed");
	/* the cached double survives a >= 16 draw, and reseeding clears it */
	sd_rng_seed(a, 9);
	sd_rng_randn(a, x, 1);
	sd_rng_seed(a, 9);
	sd_rng_randn(a, x + 1, 1);
	tap_ok(x[0] == x[1], "reseeding clears the cached normal");

	sd_rng_seed(a, 123);
	sd_rng_randn(a, big, sizeof big / sizeof big[0]);
	for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
		sum += big[i];
		sq += (double)big[i] * big[i];
	}
	sum /= sizeof big / sizeof big[0];
	sq = sq / (sizeof big / sizeof big[0]) - sum * sum;
	tap_ok(fabs(sum) < 0.02 && fabs(sq - 1) < 0.03,
	    "CPU randn mean %.4f, variance %.4f", sum, sq);

	struct sd_rng *c = sd_rng_new(SD_RNG_CUDA, 123);
	sd_rng_randn(c, big, sizeof big / sizeof big[0]);
	sum = sq = 0;
	for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
		sum += big[i];
		sq += (double)big[i] * big[i];
	}
	sum /= sizeof big / sizeof big[0];
	sq = sq / (sizeof big / sizeof big[0]) - sum * sum;
	tap_ok(fabs(sum) < 0.02 && fabs(sq - 1) < 0.03,
	    "CUDA randn mean %.4f, variance %.4f", sum, sq);
	tap_ok(sd_rng_kind(c) == SD_RNG_CUDA && sd_rng_random32(c) == 0,
	    "the CUDA generator reports its kind");
	sd_rng_free(c);
	sd_rng_free(a);
	sd_rng_free(b);
}

int
main(void)
{
	test_properties();
	if (shared_dir() == NULL) {
		tap_skip("reference draws: shared/ not found");
		return tap_done();
	}
	test_cpu("torch_randn", SD_RNG_MATH_AVX2, 1);
	test_cpu_sequence();
	test_cpu("torch_randn_scalar", SD_RNG_MATH_SCALAR, 0);
	test_philox();
	return tap_done();
}
