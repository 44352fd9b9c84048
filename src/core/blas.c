/* blas.c: which CBLAS and kernel sdbatch runs on, the CPU's features and
 * cores, and the OpenBLAS kernel fix-up at startup (see blas.h). */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define SD_X86 1
#endif

#include "core/blas.h"

#ifndef SDBATCH_BLAS_NAME
#define SDBATCH_BLAS_NAME "cblas"
#endif

/* Set in the re-executed process so that it does not re-execute again. */
#define REEXEC_ENV "SDBATCH_BLAS_REEXEC"

#if defined(HAVE_OPENBLAS_GET_CORENAME) || defined(HAVE_OPENBLAS_GET_CONFIG)
/* Not every cblas.h declares these. */
char *openblas_get_corename(void);
char *openblas_get_config(void);
#endif
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
void openblas_set_num_threads(int n);
#endif
#ifdef HAVE_OPENBLAS_GET_NUM_THREADS
int openblas_get_num_threads(void);
#endif

#ifdef SD_X86
static unsigned long long
xgetbv0(void)
{
	unsigned int lo, hi;

	__asm__ volatile ("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return ((unsigned long long)hi << 32) | lo;
}
#endif

void
cpu_features_get(struct cpu_features *f)
{
	memset(f, 0, sizeof *f);
#ifdef SD_X86
	unsigned int a, b, c, d, max;
	int osavx = 0, osavx512 = 0;

	if (!__get_cpuid(0, &max, &b, &c, &d))
		return;
	f->amd = b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163;	/* AuthenticAMD */
	__cpuid(1, a, b, c, d);
	f->family = (int)((a >> 8) & 0xf);
	if (f->family == 0xf)
		f->family += (int)((a >> 20) & 0xff);
	if ((c & bit_OSXSAVE) != 0) {
		unsigned long long x = xgetbv0();
		osavx = (x & 0x6) == 0x6;		/* XMM and YMM state */
		osavx512 = (x & 0xe6) == 0xe6;		/* and opmask, ZMM */
	}
	f->avx = osavx && (c & bit_AVX) != 0;
	f->fma = f->avx && (c & bit_FMA) != 0;
	f->f16c = f->avx && (c & bit_F16C) != 0;
	if (max >= 7) {
		__cpuid_count(7, 0, a, b, c, d);
		f->avx2 = f->avx && (b & bit_AVX2) != 0;
		if (osavx512) {
			f->avx512f = (b & bit_AVX512F) != 0;
			f->avx512dq = f->avx512f && (b & bit_AVX512DQ) != 0;
			f->avx512bw = f->avx512f && (b & bit_AVX512BW) != 0;
			f->avx512vl = f->avx512f && (b & bit_AVX512VL) != 0;
			__cpuid_count(7, 1, a, b, c, d);
			f->avx512bf16 = f->avx512f && (a & (1u << 5)) != 0;
		}
	}
#endif
}

enum cpu_level
cpu_features_level(const struct cpu_features *f)
{
#ifdef SD_X86
	if (f->avx512f && f->avx512bw && f->avx512dq && f->avx512vl)
		return CPU_LEVEL_AVX512;
	if (f->avx2 && f->fma)
		return CPU_LEVEL_AVX2;
	if (f->avx)
		return CPU_LEVEL_AVX;
	return CPU_LEVEL_SSE;
#else
	(void)f;
	return CPU_LEVEL_UNKNOWN;
#endif
}

const char *
cpu_best_openblas_core(const struct cpu_features *f)
{
	switch (cpu_features_level(f)) {
	case CPU_LEVEL_AVX512:
		/* Zen 4 (AMD family 19h) runs a 512-bit operation as two
		 * 256-bit halves: OpenBLAS's AVX2 sgemm kernel is faster on
		 * it than its AVX-512 ones (on an EPYC Zen 4 VM, OpenBLAS
		 * 0.3.21: sgemm 209 against 191 GFLOP/s, the UNet's linear
		 * layers 4-9 % and a 512x512 step 3-8 % faster).  Later AMD
		 * cores (Zen 5: full 512-bit units) get the AVX-512 kernels. */
		if (f->amd && f->family <= 0x19)
			return "Haswell";
		return f->avx512bf16 ? "Cooperlake" : "SkylakeX";
	case CPU_LEVEL_AVX2:
		return f->amd ? "Zen" : "Haswell";
	case CPU_LEVEL_AVX:
		return "Sandybridge";
	default:
		return NULL;
	}
}

enum cpu_level
openblas_core_level(const char *core)
{
	static const struct {
		const char *name;
		enum cpu_level level;
	} cores[] = {
		{ "prescott", CPU_LEVEL_SSE }, { "core2", CPU_LEVEL_SSE },
		{ "penryn", CPU_LEVEL_SSE }, { "dunnington", CPU_LEVEL_SSE },
		{ "nehalem", CPU_LEVEL_SSE }, { "atom", CPU_LEVEL_SSE },
		{ "katmai", CPU_LEVEL_SSE }, { "coppermine", CPU_LEVEL_SSE },
		{ "northwood", CPU_LEVEL_SSE }, { "banias", CPU_LEVEL_SSE },
		{ "opteron", CPU_LEVEL_SSE }, { "opteron_sse3", CPU_LEVEL_SSE },
		{ "barcelona", CPU_LEVEL_SSE }, { "bobcat", CPU_LEVEL_SSE },
		{ "nano", CPU_LEVEL_SSE }, { "athlon", CPU_LEVEL_SSE },
		{ "sandybridge", CPU_LEVEL_AVX }, { "bulldozer", CPU_LEVEL_AVX },
		{ "piledriver", CPU_LEVEL_AVX },
		{ "haswell", CPU_LEVEL_AVX2 }, { "zen", CPU_LEVEL_AVX2 },
		{ "steamroller", CPU_LEVEL_AVX2 }, { "excavator", CPU_LEVEL_AVX2 },
		{ "skylakex", CPU_LEVEL_AVX512 }, { "cooperlake", CPU_LEVEL_AVX512 },
		{ "sapphirerapids", CPU_LEVEL_AVX512 },
	};
	char low[32];
	size_t i;

	if (core == NULL)
		return CPU_LEVEL_UNKNOWN;
	for (i = 0; core[i] != '\0' && i < sizeof low - 1; i++)
		low[i] = (char)tolower((unsigned char)core[i]);
	low[i] = '\0';
	for (i = 0; i < sizeof cores / sizeof cores[0]; i++)
		if (strcmp(low, cores[i].name) == 0)
			return cores[i].level;
	return CPU_LEVEL_UNKNOWN;
}

int
openblas_core_worse(const char *core, const char *best)
{
	enum cpu_level lc = openblas_core_level(core), lb = openblas_core_level(best);

	if (lc == CPU_LEVEL_UNKNOWN || lb == CPU_LEVEL_UNKNOWN)
		return 0;
	/* weaker, or AVX-512 where an AVX2 kernel was chosen over it (Zen 4) */
	return lc < lb || (lb == CPU_LEVEL_AVX2 && lc == CPU_LEVEL_AVX512);
}

/* One line of a small sysfs file as an integer, or -1. */
static long
read_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;

	if (f == NULL)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

int
cpu_physical_cores(void)
{
	long seen[1024][2];
	int nseen = 0, logical = 0;
	cpu_set_t set;
	char path[128];

	if (sched_getaffinity(0, sizeof set, &set) != 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		return n > 0 ? (int)n : 1;
	}
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		long pkg, core;
		int dup = 0;

		if (!CPU_ISSET(cpu, &set))
			continue;
		logical++;
		snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
		pkg = read_long(path);
		snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
		core = read_long(path);
		if (pkg < 0 || core < 0)
			return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;	/* no topology: count all */
		for (int i = 0; i < nseen && !dup; i++)
			dup = seen[i][0] == pkg && seen[i][1] == core;
		if (!dup && nseen < 1024) {
			seen[nseen][0] = pkg;
			seen[nseen][1] = core;
			nseen++;
		}
	}
	if (nseen == 0)
		return logical > 0 ? logical : 1;
	return nseen;
}

const char *
blas_name(void)
{
#ifdef HAVE_OPENBLAS_GET_CONFIG
	static char name[160];

	if (name[0] == '\0') {
		const char *cfg = openblas_get_config();
		snprintf(name, sizeof name, "%s", cfg != NULL ? cfg : "OpenBLAS");
	}
	return name;
#else
	return SDBATCH_BLAS_NAME;
#endif
}

const char *
blas_kernel(void)
{
#ifdef HAVE_OPENBLAS_GET_CORENAME
	const char *core = openblas_get_corename();
	return core != NULL && *core != '\0' ? core : "unknown";
#else
	return "unknown";
#endif
}

char *
blas_describe(char *buf, size_t size)
{
	const char *name = blas_name();
	size_t n = 0;

	/* "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ..." -> "OpenBLAS 0.3.21" */
	if (strncmp(name, "OpenBLAS ", 9) == 0) {
		n = 9;
		while (name[n] != '\0' && name[n] != ' ')
			n++;
		snprintf(buf, size, "%.*s, kernel %s", (int)n, name, blas_kernel());
	} else {
		snprintf(buf, size, "%s, kernel %s", name, blas_kernel());
	}
	return buf;
}

void
blas_set_threads(int n)
{
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
	openblas_set_num_threads(n > 0 ? n : 1);
#else
	(void)n;
#endif
}

int
blas_get_threads(void)
{
#ifdef HAVE_OPENBLAS_GET_NUM_THREADS
	return openblas_get_num_threads();
#else
	return 1;
#endif
}

static char kernel_note[160];

const char *
blas_kernel_note(void)
{
	const char *from = getenv(REEXEC_ENV);

	if (kernel_note[0] == '\0' && from != NULL && *from != '\0')
		snprintf(kernel_note, sizeof kernel_note, "OpenBLAS picked its %s kernel for this "
		    "CPU; sdbatch set OPENBLAS_CORETYPE=%s", from, blas_kernel());
	return kernel_note[0] != '\0' ? kernel_note : NULL;
}

int
blas_ensure_kernel(int argc, char **argv, int verbose)
{
#if defined(HAVE_OPENBLAS_GET_CORENAME) && defined(SD_X86)
	struct cpu_features f;
	const char *core, *best, *env;
	char from[64];

	(void)argc;
	env = getenv(REEXEC_ENV);
	if (env != NULL && *env != '\0') {
		/* We are the re-executed process (the first one said why): do
		 * not loop. */
		return 0;
	}
	env = getenv("SDBATCH_NO_REEXEC");
	if ((env != NULL && strcmp(env, "1") == 0) || getenv("OPENBLAS_CORETYPE") != NULL)
		return 0;	/* the user's choice */
	if (strncmp(blas_name(), "OpenBLAS", 8) != 0 || strstr(blas_name(), "DYNAMIC_ARCH") == NULL)
		return 0;	/* not an OpenBLAS that can switch */
	core = blas_kernel();
	cpu_features_get(&f);
	best = cpu_best_openblas_core(&f);
	if (!openblas_core_worse(core, best))
		return 0;
	snprintf(from, sizeof from, "%s", core);
	if (verbose)
		fprintf(stderr, "sdbatch: OpenBLAS picked its %s kernel but %s suits this CPU "
		    "better: re-executing with OPENBLAS_CORETYPE=%s\n", from, best, best);
	if (setenv("OPENBLAS_CORETYPE", best, 1) != 0 || setenv(REEXEC_ENV, from, 1) != 0)
		return -1;
	fflush(NULL);
	execv("/proc/self/exe", argv);
	/* Still here: go on with the weak kernel. */
	if (verbose)
		fprintf(stderr, "sdbatch: cannot re-execute /proc/self/exe: %s; going on with the "
		    "%s kernel\n", strerror(errno), from);
	unsetenv("OPENBLAS_CORETYPE");
	unsetenv(REEXEC_ENV);
	return -1;
#else
	(void)argc;
	(void)argv;
	(void)verbose;
	return 0;
#endif
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double
blas_sgemm_peak(int n, int reps)
{
	size_t nn = (size_t)n * n;
	float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b), *c = malloc(nn * sizeof *c);
	double best = 0;

	if (a == NULL || b == NULL || c == NULL) {
		free(a);
		free(b);
		free(c);
		return 0;
	}
	for (size_t i = 0; i < nn; i++) {
		a[i] = (float)(i % 13) * 0.01f - 0.06f;
		b[i] = (float)(i % 7) * 0.01f - 0.03f;
	}
	for (int r = 0; r <= reps; r++) {	/* the first call warms up */
		double t = now();
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n,
		    0.0f, c, n);
		t = now() - t;
		if (r > 0 && t > 0 && 2.0 * nn * n / t / 1e9 > best)
			best = 2.0 * nn * n / t / 1e9;
	}
	free(a);
	free(b);
	free(c);
	return best;
}
