/* testutil.h: shared helpers of the test programs. */
#ifndef SD_TESTUTIL_H
#define SD_TESTUTIL_H

#include <stddef.h>

#include "io/safetensors.h"
#include "model/weights.h"
#include "tap.h"

/* The shared/ folder ($SDBATCH_SHARED, else ../shared), or NULL if absent. */
const char *shared_dir(void);
/* "<shared>/<rel>" in a static buffer, or NULL when shared/ is absent. */
const char *shared_path(const char *rel);
/* Open testdata/sd15-tiny/goldens/<name>.safetensors; NULL (with a
 * diagnostic) when missing. */
struct st_file *golden_open(const char *name);
/* The same in testdata/<set>/goldens ("sd21-tiny", ...). */
struct st_file *golden_open_in(const char *set, const char *name);
/* A golden tensor as freshly malloc'd F32 (I32/U8 are widened too); exits
 * the test with a "not ok" when the tensor is missing.  n gets numel. */
float *golden_f32(struct st_file *g, const char *name, size_t *n);

/* A weights set with the tensors of f whose names start with prefix, less
 * those whose names start with skip (NULL: none); when replace is not NULL
 * it stands under the name skip instead (for load-error tests). */
struct sd_weights *weights_subset(const struct st_file *f, const char *prefix,
    const char *skip, const struct sd_tensor *replace);

/* Compare got with want elementwise: |got - want| <= atol + rtol*|want|.
 * Reports one TAP result named what, with the max abs diff; returns pass. */
int check_close(const char *what, const float *got, const float *want, size_t n,
    double atol, double rtol);

/* The device the engine tests run on: $SDBATCH_TEST_DEVICE ("cpu", "cuda",
 * "cuda:N"), default cpu. */
const char *test_device(void);
struct sd_ctx;
/* A context on test_device().  When that device is unavailable (no GPU) the
 * whole test is skipped: the plan "1..0 # SKIP" is printed and the process
 * exits 0.  Any other failure is a "not ok" and exit 1. */
struct sd_ctx *test_ctx_new(void);

#endif
