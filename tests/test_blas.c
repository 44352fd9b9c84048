/* test_blas.c: BLAS and CPU detection, and the OpenBLAS kernel fix-up.
 *
 * The fix-up is tested for real where it can be: the program re-executes
 * itself with OPENBLAS_CORETYPE=Prescott (as if OpenBLAS had picked that
 * kernel on its own), removes the variable again, and calls
 * blas_ensure_kernel(), which must re-execute it once more with the kernel
 * the CPU supports. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/blas.h"
#include "core/cpu_kernels.h"
#include "tap.h"

#define STAGE "SDBATCH_TEST_BLAS_STAGE"
#define BEFORE "SDBATCH_TEST_BLAS_BEFORE"

static int
can_switch(void)
{
	struct cpu_features f;

	cpu_features_get(&f);
	return strncmp(blas_name(), "OpenBLAS", 8) == 0 && strstr(blas_name(), "DYNAMIC_ARCH") &&
	    cpu_best_openblas_core(&f) != NULL && getenv("OPENBLAS_CORETYPE") == NULL &&
	    getenv("SDBATCH_NO_REEXEC") == NULL;
}

int
main(int argc, char **argv)
{
	const char *stage = getenv(STAGE);
	struct cpu_features f, none = { 0 }, avx2 = { 0 }, avx512 = { 0 };
	char buf[256];

	if (stage == NULL && can_switch()) {
		setenv(STAGE, "child", 1);
		setenv("OPENBLAS_CORETYPE", "Prescott", 1);
		execv("/proc/self/exe", argv);
		unsetenv(STAGE);
		unsetenv("OPENBLAS_CORETYPE");
	} else if (stage != NULL && strcmp(stage, "child") == 0) {
		/* OpenBLAS runs its Prescott kernel now: as if it had chosen it. */
		setenv(BEFORE, blas_kernel(), 1);
		setenv(STAGE, "final", 1);
		unsetenv("OPENBLAS_CORETYPE");
		blas_ensure_kernel(argc, argv, 1);
		setenv(STAGE, "noexec", 1);	/* still here: reported below */
	}
	stage = getenv(STAGE);

	/* Kernel levels and choices. */
	tap_ok(openblas_core_level("Prescott") == CPU_LEVEL_SSE, "Prescott is an SSE kernel");
	tap_ok(openblas_core_level("sandybridge") == CPU_LEVEL_AVX, "Sandybridge is AVX (any case)");
	tap_ok(openblas_core_level("Zen") == CPU_LEVEL_AVX2 && openblas_core_level("Haswell") == CPU_LEVEL_AVX2,
	    "Zen and Haswell are AVX2");
	tap_ok(openblas_core_level("SkylakeX") == CPU_LEVEL_AVX512 &&
	    openblas_core_level("COOPERLAKE") == CPU_LEVEL_AVX512, "SkylakeX and Cooperlake are AVX-512");
	tap_ok(openblas_core_level("ARMV8") == CPU_LEVEL_UNKNOWN && openblas_core_level(NULL) == CPU_LEVEL_UNKNOWN,
	    "unknown kernels are left alone");
	avx2.avx = avx2.avx2 = avx2.fma = avx2.f16c = 1;
	avx512 = avx2;
	avx512.avx512f = avx512.avx512bw = avx512.avx512dq = avx512.avx512vl = 1;
#if defined(__x86_64__)
	tap_ok(cpu_best_openblas_core(&none) == NULL, "no kernel to force on a plain SSE CPU");
	tap_ok(strcmp(cpu_best_openblas_core(&avx2), "Haswell") == 0, "AVX2 + FMA: Haswell");
	avx2.amd = 1;
	tap_ok(strcmp(cpu_best_openblas_core(&avx2), "Zen") == 0, "AVX2 + FMA on AMD: Zen");
	tap_ok(strcmp(cpu_best_openblas_core(&avx512), "SkylakeX") == 0, "AVX-512: SkylakeX");
	avx512.avx512bf16 = 1;
	tap_ok(strcmp(cpu_best_openblas_core(&avx512), "Cooperlake") == 0, "AVX-512 + BF16: Cooperlake");
	avx512.amd = 1;
	avx512.family = 0x19;
	tap_ok(strcmp(cpu_best_openblas_core(&avx512), "Haswell") == 0,
	    "AVX-512 + BF16 on AMD Zen 4 (family 19h): Haswell, whose sgemm is faster there");
	avx512.family = 0x1a;
	tap_ok(strcmp(cpu_best_openblas_core(&avx512), "Cooperlake") == 0,
	    "AVX-512 + BF16 on AMD family 1Ah (Zen 5): Cooperlake");
	tap_ok(openblas_core_worse("Prescott", "Haswell") && openblas_core_worse("Haswell", "SkylakeX") &&
	    openblas_core_worse("Cooperlake", "Haswell") && openblas_core_worse("SkylakeX", "Zen"),
	    "a weaker kernel, or AVX-512 where AVX2 was chosen (Zen 4), is replaced");
	tap_ok(!openblas_core_worse("SkylakeX", "Cooperlake") && !openblas_core_worse("Haswell", "Zen") &&
	    !openblas_core_worse("Zen", "Haswell") && !openblas_core_worse("Haswell", "Haswell") &&
	    !openblas_core_worse("ARMV8", "Haswell") && !openblas_core_worse("Haswell", NULL),
	    "a kernel of the same level, or an unknown one, is kept");
#else
	(void)none;
	tap_skip("x86-64 kernel choices on another CPU");
#endif

	/* This machine. */
	cpu_features_get(&f);
	tap_diag("CPU level %d, kernels %s, %d physical cores, %s", (int)cpu_features_level(&f),
	    cpu_kernels_init(), cpu_physical_cores(), blas_describe(buf, sizeof buf));
	tap_ok(cpu_physical_cores() >= 1, "physical cores: %d", cpu_physical_cores());
	tap_ok(*blas_name() != '\0' && *blas_kernel() != '\0', "the BLAS says what it is: %s",
	    blas_describe(buf, sizeof buf));
	tap_ok(blas_sgemm_peak(64, 1) > 0, "sgemm peak measures something");

	/* The fix-up. */
	if (stage != NULL && strcmp(stage, "final") == 0) {
		const char *before = getenv(BEFORE), *best = cpu_best_openblas_core(&f);
		tap_ok(before != NULL && strcmp(before, "Prescott") == 0,
		    "OPENBLAS_CORETYPE=Prescott gave the Prescott kernel (%s)", before ? before : "?");
		tap_ok(getenv("OPENBLAS_CORETYPE") != NULL && strcmp(getenv("OPENBLAS_CORETYPE"), best) == 0,
		    "re-executed with OPENBLAS_CORETYPE=%s", best);
		tap_ok(openblas_core_level(blas_kernel()) >= openblas_core_level(best),
		    "and OpenBLAS runs %s now", blas_kernel());
		tap_ok(blas_kernel_note() != NULL, "the re-executed program can say why: %s",
		    blas_kernel_note() ? blas_kernel_note() : "(nothing)");
	} else if (stage != NULL && strcmp(stage, "noexec") == 0) {
		tap_ok(0, "blas_ensure_kernel did not replace a Prescott kernel (%s)", getenv(BEFORE));
	} else {
		tap_skip("the kernel fix-up needs a DYNAMIC_ARCH OpenBLAS on x86-64 with AVX "
		    "(and no OPENBLAS_CORETYPE or SDBATCH_NO_REEXEC set)");
	}
	return tap_done();
}
