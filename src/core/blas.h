/* blas.h: what CBLAS this sdbatch uses, which kernel it runs, and the CPU
 * facts the CPU backend needs (features, physical cores).
 *
 * OpenBLAS built with DYNAMIC_ARCH (Debian's) picks its kernel from the
 * CPUID it sees; on some virtual CPUs it picks an old one (Prescott: SSE3)
 * although the CPU has AVX-512, and runs 7x slower without a word.
 * blas_ensure_kernel() notices that at startup and re-executes the program
 * with OPENBLAS_CORETYPE set to the kernel the CPU supports. */
#ifndef SD_BLAS_H
#define SD_BLAS_H

#include <stddef.h>

/* CPU feature levels, in the order OpenBLAS's x86-64 kernels need them. */
enum cpu_level {
	CPU_LEVEL_UNKNOWN = 0,	/* not x86-64, or a kernel we do not know */
	CPU_LEVEL_SSE = 1,	/* Prescott, Core2, Nehalem, Opteron, ... */
	CPU_LEVEL_AVX = 2,	/* Sandybridge, Bulldozer */
	CPU_LEVEL_AVX2 = 3,	/* Haswell, Zen, Excavator, ... (AVX2 + FMA) */
	CPU_LEVEL_AVX512 = 4,	/* SkylakeX, Cooperlake, SapphireRapids */
};

/* The CPU's vector features (x86-64; all 0 elsewhere). */
struct cpu_features {
	int avx, avx2, fma, f16c;
	int avx512f, avx512bw, avx512dq, avx512vl, avx512bf16;
	int amd;		/* AuthenticAMD */
	int family;		/* CPUID family, extended family included (0x19: Zen 3, 4) */
};

void cpu_features_get(struct cpu_features *f);
/* The highest level of f. */
enum cpu_level cpu_features_level(const struct cpu_features *f);
/* The OpenBLAS core type that suits f best ("Cooperlake", "SkylakeX",
 * "Zen", "Haswell", "Sandybridge"; "Haswell" on AMD Zen 4 although it has
 * AVX-512), or NULL when none is better than the baseline. */
const char *cpu_best_openblas_core(const struct cpu_features *f);
/* The level an OpenBLAS core name needs (CPU_LEVEL_UNKNOWN when the name
 * is not an x86-64 kernel we know; case-insensitive). */
enum cpu_level openblas_core_level(const char *core);
/* Whether OpenBLAS's kernel core should give way to best (from
 * cpu_best_openblas_core): it needs less of the CPU than best, or it is an
 * AVX-512 kernel where best is an AVX2 one (chosen over AVX-512 for a CPU
 * that runs it faster: Zen 4).  0 when either name is unknown or NULL. */
int openblas_core_worse(const char *core, const char *best);

/* Physical cores this process may run on (hyper-threads counted once;
 * at least 1). */
int cpu_physical_cores(void);

/* "OpenBLAS 0.3.21 DYNAMIC_ARCH ..." or the configured BLAS name. */
const char *blas_name(void);
/* The kernel in use ("SkylakeX"), or "unknown" for a BLAS that does not
 * say. */
const char *blas_kernel(void);
/* "OpenBLAS 0.3.21, kernel SkylakeX" (into buf; returns buf). */
char *blas_describe(char *buf, size_t size);

/* Threads the BLAS uses for one call (1 inside sdbatch's parallel
 * regions: see backend_cpu.c). */
void blas_set_threads(int n);
/* The BLAS's current thread count (1 when it does not say). */
int blas_get_threads(void);

/* Call first thing in main(): when the BLAS is OpenBLAS, its kernel is
 * weaker than the CPU supports and the user has not set
 * OPENBLAS_CORETYPE, re-execute argv with OPENBLAS_CORETYPE set to the
 * right kernel (saying so on stderr when verbose).  Returns only when
 * nothing was done or the re-exec failed (0; -1 after a message when
 * verbose).  SDBATCH_NO_REEXEC=1 turns it off. */
int blas_ensure_kernel(int argc, char **argv, int verbose);

/* A note made by blas_ensure_kernel in the re-executed process ("OpenBLAS
 * picked Prescott; running SkylakeX") or NULL. */
const char *blas_kernel_note(void);

/* Measure cblas_sgemm on square n x n matrices (best of reps), in
 * GFLOP/s, with the BLAS's own threads; 0 when out of memory. */
double blas_sgemm_peak(int n, int reps);

#endif
