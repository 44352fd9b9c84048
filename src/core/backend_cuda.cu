/* backend_cuda.cu: the CUDA backend: cuBLAS for the matrix products, a few
 * kernels for everything else (configure --enable-cuda).
 *
 * Memory.  The arena's chunks are cudaMalloc'd, so activations stay on the
 * device; only sd_upload/sd_download move them.  Weights (struct sd_tensor
 * views of the mmap'd checkpoint) are uploaded once, the first time an op
 * sees them, into a cache keyed by the tensor's data pointer; an entry also
 * records the dtype, the size and a fingerprint of the bytes (the whole of a
 * small tensor, 16 windows of a big one), so that host memory freed and
 * reused for other data is not mistaken for the old weight.  Weights must
 * not change while the context lives.  Scratch buffers (the im2col tile, the
 * F16 copy of a GEMM operand, staging for weight conversion, token ids,
 * attention scores) grow when a bigger one is needed and are kept: after the
 * first forward pass at a size, the ops allocate nothing and make no host
 * round trip (sd_download waits for the device, nothing else does).
 *
 * Precision: SDBATCH_CUDA_PRECISION, read at init.
 *   fp16 (default): linear and conv2d run as cublasGemmEx with F16 inputs,
 *     F32 accumulation (CUBLAS_COMPUTE_32F, on the tensor cores) and F32
 *     output.  GEMM weights live on the device as F16 (an F16 checkpoint is
 *     copied as is, F32 and BF16 ones are rounded to F16 once, at upload).
 *     Activations stay F32 in the arena; the GEMM's activation operand is
 *     rounded to F16 into a scratch buffer by a kernel (the im2col kernel
 *     writes F16 directly).  Values beyond the F16 range saturate at
 *     +-65504 (NaN stays NaN).
 *   fp32: every GEMM in F32 (CUBLAS_COMPUTE_32F with CUBLAS_DEFAULT_MATH: no
 *     TF32), weights widened to F32 on the device: for checking.
 * Norms, attention and the elementwise ops are F32 in both modes; biases,
 * norm affines and embedding tables are kept as F32.
 *
 * Attention.  Head dims up to 160 run in a flash-attention style kernel: one
 * block of 128 threads per (batch, head, 64 query rows); 32-key tiles of K
 * and V pass through shared memory, scores stay in registers (4x4 per
 * thread), the softmax is computed online (running max and sum per row),
 * the output accumulates in registers.  Larger head dims (the VAE's one
 * 512-wide head) go through blocks of query rows: an SGEMM for the block's
 * scores, a softmax kernel, an SGEMM with V (the scores of one block only,
 * at most 64 MiB).  SDBATCH_CUDA_ATTENTION=gemm forces the second way for
 * every head dim (to test it).  An additive bias on the scores (T5's
 * relative positions) always takes the second way, the bias added by the
 * softmax kernel.
 *
 * Errors.  init fails with SD_EUNAVAILABLE when there is no usable device
 * (no driver, no device, index out of range, kernels not built for it).
 * After init, every CUDA and cuBLAS call is checked; a failure prints
 * "sdbatch: CUDA error in <op>: <message>" and exits with status 70
 * (SD_EINTERNAL), since the ops cannot return an error and a device in an
 * error state cannot go on.  Out of memory in mem_alloc returns NULL (the
 * arena reports it); out of memory for a weight or a scratch buffer exits
 * with 70 and a message naming the size.  Kernels run asynchronously, so a
 * fault inside one may be reported by a later op: SDBATCH_CUDA_SYNC=1 makes
 * every op wait for its work, so that the op named is the one at fault.
 *
 * All work goes to one stream per context; a context is used by one host
 * thread at a time (the one that created it: the device is selected with
 * cudaSetDevice in init). */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

extern "C" {
#include "core/backend.h"
}

/* The im2col tile of a convolution holds at most this many bytes. */
#define COL_TILE_BYTES ((size_t)256 << 20)
/* Attention scores of one block of query rows (the GEMM path), floats. */
#define SCORE_FLOATS ((size_t)16 << 20)
/* cuBLAS workspace (32 MiB is what NVIDIA advises for Hopper). */
#define BLAS_WORKSPACE ((size_t)32 << 20)

/* The flash attention kernel: query rows and keys per tile, threads. */
#define ATT_BQ 64
#define ATT_BK 32
#define ATT_THREADS 128
#define ATT_PS (ATT_BK + 8)	/* row stride of the probabilities tile */
#define ATT_MAX_DH 160
/* The tensor-core flash kernel (fp16 mode): query rows and keys per tile,
 * warps, row strides of a warp's scores (floats) and probabilities
 * (halves), the largest head dim. */
#define TC_BQ 64
#define TC_BK 64
#define TC_WARPS 4
#define TC_SS (TC_BK + 4)
#define TC_PS (TC_BK + 8)
#define TC_MAX_DH 160

#define THREADS 256

struct dev_buf {
	void *p;
	size_t cap;		/* bytes */
};

/* One cached weight. */
struct wentry {
	const void *key;	/* the host data pointer; NULL: a free slot */
	int dtype;
	int64_t numel;
	uint64_t print;
	float *f32;		/* device copies, made when first asked for */
	__half *f16;
};

struct cuda_state {
	int device;
	int fp16;		/* GEMM inputs in F16 */
	int sync;		/* SDBATCH_CUDA_SYNC: wait after every op */
	int gemm_attention;	/* SDBATCH_CUDA_ATTENTION=gemm */
	int flash_ok[8];	/* per head-dim bucket: shared memory granted */
	int tc_ok[TC_MAX_DH / 16 + 1];	/* tensor-core flash, per DP / 16 */
	cudaStream_t stream;
	cublasHandle_t blas;
	void *workspace;
	struct dev_buf col, half, stage, ids, scores, tmp;
	struct wentry *wtab;
	size_t wcap, wcount;
	size_t mem_base, mem_peak;	/* device bytes in use: after init, most */
	size_t weight_bytes;	/* the device copies of weights */
	struct profile *prof;	/* SDBATCH_CUDA_PROFILE, else NULL */
	char desc[256];
};

/* SDBATCH_CUDA_PROFILE=1: every op waits for its work; its device time
 * (CUDA events around its work) and its host time (from its call to the end
 * of its work) go to a bucket named after the op and its shape; ops that
 * allocated (first use: weight uploads, scratch growth) go to one bucket of
 * their own.  The table is printed to stderr at fini. */
#define PROF_BUCKETS 48
struct profile {
	double last;		/* when the previous op ended, seconds */
	double begin;		/* when the op in progress began */
	cudaEvent_t ev0, ev1;	/* around the op in progress, on the device */
	int allocated;		/* the op in progress allocated device memory */
	char key[64];		/* the op in progress's bucket, if not its name */
	int n;
	struct {
		char name[64];
		double s, gpu;	/* host time (launch to finish), device time */
		long calls;
	} b[PROF_BUCKETS];
};
#define PROF_BEGIN(s) do { if ((s)->prof != NULL) prof_begin(s); } while (0)

/* ------------------------------------------------------------ errors */

/* The first error of the current op (code 0: none), made the context's
 * sticky status by cuda_take_error when the op returns: the process goes
 * on (the job fails with the message; no exit() below the command line). */
static int cuda_failed_code;
static char cuda_failed[512];

static void
fail_op(int code, const char *fmt, ...)
{
	va_list ap;

	if (cuda_failed_code != 0)
		return;
	cuda_failed_code = code;
	va_start(ap, fmt);
	vsnprintf(cuda_failed, sizeof cuda_failed, fmt, ap);
	va_end(ap);
}

static void
die(const char *op, const char *what)
{
	fail_op(SD_EUNAVAILABLE, "CUDA error in %s: %s", op, what);
}

static void
cuda_take_error(struct sd_ctx *c, struct sd_error *status)
{
	(void)c;
	if (cuda_failed_code == 0)
		return;
	if (status->code == 0)
		sd_fail(status, cuda_failed_code, "%s", cuda_failed);
	cuda_failed_code = 0;
	cuda_failed[0] = '\0';
}

static void
ck(cudaError_t e, const char *op)
{
	char msg[256];

	if (e == cudaSuccess)
		return;
	snprintf(msg, sizeof msg, "%s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
	die(op, msg);
}

static void
ckb(cublasStatus_t st, const char *op)
{
	char msg[256];

	if (st == CUBLAS_STATUS_SUCCESS)
		return;
	snprintf(msg, sizeof msg, "cuBLAS: %s (%s)", cublasGetStatusString(st),
	    cublasGetStatusName(st));
	die(op, msg);
}

static double
mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Name the profile bucket of the op in progress (when profiling). */
static void __attribute__((format(printf, 2, 3)))
prof_key(struct cuda_state *s, const char *fmt, ...)
{
	va_list ap;

	if (s->prof == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(s->prof->key, sizeof s->prof->key, fmt, ap);
	va_end(ap);
}

static void
prof_begin(struct cuda_state *s)
{
	s->prof->begin = mono_now();
	(void)cudaEventRecord(s->prof->ev0, s->stream);
}

static void
prof_add(struct profile *p, const char *name, double t, double gpu)
{
	int i;

	for (i = 0; i < p->n; i++)
		if (strcmp(p->b[i].name, name) == 0)
			break;
	if (i == p->n) {
		if (p->n == PROF_BUCKETS)
			i = PROF_BUCKETS - 1;	/* the last bucket takes the rest */
		else
			snprintf(p->b[p->n++].name, sizeof p->b[0].name, "%s", name);
	}
	p->b[i].s += t;
	p->b[i].gpu += gpu;
	p->b[i].calls++;
}

static void
prof_print(const struct profile *p)
{
	double total = 0, gtotal = 0;
	int order[PROF_BUCKETS];

	for (int i = 0; i < p->n; i++) {
		total += p->b[i].s;
		gtotal += p->b[i].gpu;
		order[i] = i;
	}
	for (int i = 1; i < p->n; i++)	/* by device time, largest first */
		for (int j = i; j > 0 && p->b[order[j]].gpu > p->b[order[j - 1]].gpu; j--) {
			int t = order[j];
			order[j] = order[j - 1];
			order[j - 1] = t;
		}
	fprintf(stderr, "sdbatch: CUDA profile (each op synchronised):\n");
	fprintf(stderr, "  %-44s %7s %10s %9s %6s %10s\n", "op", "calls", "device ms", "us/call",
	    "%", "host ms");
	for (int k = 0; k < p->n; k++) {
		int i = order[k];
		fprintf(stderr, "  %-44s %7ld %10.2f %9.1f %6.1f %10.2f\n", p->b[i].name,
		    p->b[i].calls, 1e3 * p->b[i].gpu, 1e6 * p->b[i].gpu / (double)p->b[i].calls,
		    gtotal > 0 ? 100 * p->b[i].gpu / gtotal : 0, 1e3 * p->b[i].s);
	}
	fprintf(stderr, "  %-44s %7s %10.2f %9s %6s %10.2f\n", "total", "", 1e3 * gtotal, "", "",
	    1e3 * total);
}

/* After an op's launches: report launch errors (and, with SDBATCH_CUDA_SYNC,
 * faults during the op's kernels). */
static void
done(struct cuda_state *s, const char *op)
{
	ck(cudaGetLastError(), op);
	if (s->sync || s->prof != NULL)
		ck(cudaStreamSynchronize(s->stream), op);
	if (s->prof != NULL) {
		struct profile *p = s->prof;
		float ms = 0;
		ck(cudaEventRecord(p->ev1, s->stream), op);
		ck(cudaEventSynchronize(p->ev1), op);
		ck(cudaEventElapsedTime(&ms, p->ev0, p->ev1), op);
		double t = mono_now();
		prof_add(p, p->allocated ? "(ops that allocated: first use)" :
		    p->key[0] ? p->key : op, t - p->begin, 1e-3 * ms);
		p->last = t;
		p->allocated = 0;
		p->key[0] = '\0';
	}
}

static void
die_oom(const char *op, const char *what, size_t bytes)
{
	fail_op(SD_EINTERNAL, "out of GPU memory in %s: %s needs %zu MiB more", op, what,
	    (bytes + ((size_t)1 << 20) - 1) >> 20);
}

struct cuda_state;
static void note_usage(struct cuda_state *s);
/* The context whose device memory dmalloc counts (one context per process
 * in practice; with several, the last one made). */
static struct cuda_state *usage_state;

/* cudaMalloc; NULL (the op failed: see cuda_take_error) when out of memory. */
static void *
dmalloc(size_t bytes, const char *op, const char *what)
{
	void *p = NULL;
	cudaError_t e;

	if (bytes == 0)
		bytes = 16;
	e = cudaMalloc(&p, bytes);
	if (e == cudaErrorMemoryAllocation) {
		(void)cudaGetLastError();
		die_oom(op, what, bytes);
	}
	ck(e, op);
	if (usage_state != NULL) {
		note_usage(usage_state);
		if (usage_state->prof != NULL)
			usage_state->prof->allocated = 1;
	}
	return p;
}

/* Grow a scratch buffer to hold bytes (its contents are lost). */
static void *
grow(struct cuda_state *s, struct dev_buf *b, size_t bytes, const char *op, const char *what)
{
	if (bytes <= b->cap && b->p != NULL)
		return b->p;
	bytes = (bytes + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
	if (b->p != NULL) {
		/* kernels still queued may use the old buffer */
		ck(cudaStreamSynchronize(s->stream), op);
		ck(cudaFree(b->p), op);
		b->p = NULL;
		b->cap = 0;
	}
	b->p = dmalloc(bytes, op, what);
	b->cap = bytes;
	return b->p;
}

static unsigned
nblocks(size_t n, unsigned threads)
{
	size_t b = (n + threads - 1) / threads;

	return b > ((size_t)1 << 20) ? 1u << 20 : (unsigned)(b ? b : 1);
}

static unsigned
cap_grid(size_t n, unsigned limit)
{
	return n > limit ? limit : (unsigned)(n ? n : 1);
}

/* Device memory only grows at an allocation: sample what is in use after
 * each one (cudaMemGetInfo counts the CUDA context and cuBLAS too). */
static void
note_usage(struct cuda_state *s)
{
	size_t fr = 0, total = 0;

	if (cudaMemGetInfo(&fr, &total) != cudaSuccess) {
		(void)cudaGetLastError();
		return;
	}
	if (total - fr > s->mem_peak)
		s->mem_peak = total - fr;
}

/* ------------------------------------------------------------ kernels */

#define GRID_LOOP(i, n) \
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); \
	    i += (size_t)gridDim.x * blockDim.x)

__device__ __forceinline__ float
d_silu(float v)
{
	return v / (1.0f + expf(-v));
}

__device__ __forceinline__ float
d_gelu(float v)
{
	return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}

/* GELU's tanh approximation as v sigmoid(2u) (see cpu_kernels.c). */
__device__ __forceinline__ float
d_gelu_tanh(float v)
{
	float u = 0.79788456080286535588f * (v + 0.044715f * v * v * v);

	return v / (1.0f + expf(-2.0f * u));
}

/* Round to F16, saturating at the largest finite value (NaN stays NaN). */
__device__ __forceinline__ __half
d_to_half(float v)
{
	float c = fminf(fmaxf(v, -65504.0f), 65504.0f);

	return __float2half_rn(v == v ? c : v);
}

__device__ __forceinline__ void
d_store(float *p, float v)
{
	*p = v;
}

__device__ __forceinline__ void
d_store(__half *p, float v)
{
	*p = d_to_half(v);
}

/* Element i of raw F32, F16 or BF16 data. */
__device__ __forceinline__ float
d_load(const void *src, size_t i, int dtype)
{
	if (dtype == SD_F32)
		return ((const float *)src)[i];
	unsigned short u = ((const unsigned short *)src)[i];
	if (dtype == SD_F16)
		return __half2float(__ushort_as_half(u));
	return __uint_as_float((unsigned)u << 16);
}

template <typename T>
__global__ void
k_convert(T *dst, const void *src, int dtype, size_t n)
{
	GRID_LOOP(i, n)
		d_store(dst + i, d_load(src, i, dtype));
}

__global__ void
k_unary(float *x, size_t n, int kind)
{
	GRID_LOOP(i, n) {
		float v = x[i];
		if (kind == SD_UNARY_SILU)
			v = d_silu(v);
		else if (kind == SD_UNARY_GELU)
			v = d_gelu(v);
		else if (kind == SD_UNARY_GELU_TANH)
			v = d_gelu_tanh(v);
		else
			v = v / (1.0f + expf(-1.702f * v));
		x[i] = v;
	}
}

__global__ void
k_geglu(float *y, const float *p, size_t rows, int d)
{
	GRID_LOOP(i, rows * d) {
		size_t r = i / (size_t)d, j = i % (size_t)d;
		const float *pr = p + r * 2 * d;
		y[i] = pr[j] * d_gelu(pr[d + j]);
	}
}

__global__ void
k_add(float *y, const float *a, const float *b, size_t n)
{
	GRID_LOOP(i, n)
		y[i] = a[i] + b[i];
}

__global__ void
k_mul(float *y, const float *a, const float *b, size_t n)
{
	GRID_LOOP(i, n)
		y[i] = a[i] * b[i];
}

/* x[r, j] += gate[r / tokens, j] * y[r, j] (gate rows ldg apart). */
__global__ void
k_gated_add(float *x, const float *gate, int ldg, const float *y, size_t tokens, size_t dim,
    size_t n)
{
	GRID_LOOP(i, n) {
		size_t r = i / dim, j = i % dim;
		x[i] += gate[(r / tokens) * (size_t)ldg + j] * y[i];
	}
}

/* y[b, c, yy, xx] = x[b, token (yy/p, xx/p), ((yy%p)*p + xx%p)*ch + c]. */
__global__ void
k_unpatchify(float *y, const float *x, int b, int ch, int h, int w, int p)
{
	size_t n = (size_t)b * ch * h * w;
	int gw = w / p, gh = h / p;
	size_t feat = (size_t)p * p * ch;

	GRID_LOOP(i, n) {
		int xx = (int)(i % (size_t)w), yy = (int)(i / (size_t)w % (size_t)h);
		size_t plane = i / ((size_t)w * h);
		int ci = (int)(plane % (size_t)ch), bi = (int)(plane / (size_t)ch);
		size_t tok = (size_t)bi * gh * gw + (size_t)(yy / p) * gw + (size_t)(xx / p);
		y[i] = x[tok * feat + ((size_t)(yy % p) * p + (size_t)(xx % p)) * ch + ci];
	}
}

__global__ void
k_lerp(float *y, const float *a, const float *b, float s, size_t n)
{
	GRID_LOOP(i, n)
		y[i] = a[i] + s * (b[i] - a[i]);
}

__global__ void
k_scale(float *x, float s, size_t n)
{
	GRID_LOOP(i, n)
		x[i] *= s;
}

/* y[row, :cols] += v[row % period] (conv bias over NCHW, add_channel). */
__global__ void
k_add_rows(float *y, const float *v, size_t rows, size_t period, size_t cols)
{
	for (size_t r = blockIdx.y; r < rows; r += gridDim.y) {
		float add = v[r % period];
		float *p = y + r * cols;
		for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < cols;
		    i += (size_t)gridDim.x * blockDim.x)
			p[i] += add;
	}
}

/* y[r, j] += bias[j] (linear bias). */
__global__ void
k_add_cols(float *y, const float *bias, size_t rows, size_t cols)
{
	GRID_LOOP(i, rows * cols)
		y[i] += bias[i % cols];
}

__global__ void
k_upsample2x(float *y, const float *x, size_t planes, int h, int w)
{
	size_t ow = 2 * (size_t)w, ohw = 4 * (size_t)h * w;

	GRID_LOOP(i, planes * ohw) {
		size_t pl = i / ohw, rem = i % ohw;
		size_t oy = rem / ow, ox = rem % ow;
		y[i] = x[pl * h * w + (oy / 2) * w + ox / 2];
	}
}

__global__ void
k_concat(float *y, const float *a, size_t ca, const float *b, size_t cb, size_t n, size_t hw)
{
	size_t per = (ca + cb) * hw;

	GRID_LOOP(i, n * per) {
		size_t bi = i / per, rem = i % per;
		y[i] = rem < ca * hw ? a[bi * ca * hw + rem] : b[bi * cb * hw + rem - ca * hw];
	}
}

/* y[b, c, r] = x[b, r, c] in 32x32 tiles through shared memory. */
__global__ void
k_transpose(float *y, const float *x, int n, int rows, int cols)
{
	__shared__ float t[32][33];
	int tiles_y = (rows + 31) / 32;

	for (int b = blockIdx.z; b < n; b += gridDim.z) {
		size_t off = (size_t)b * rows * cols;
		for (int ty = blockIdx.y; ty < tiles_y; ty += gridDim.y) {
			int r0 = ty * 32, c0 = blockIdx.x * 32;
			__syncthreads();
			for (int j = threadIdx.y; j < 32; j += blockDim.y) {
				int r = r0 + j, c = c0 + threadIdx.x;
				if (r < rows && c < cols)
					t[j][threadIdx.x] = x[off + (size_t)r * cols + c];
			}
			__syncthreads();
			for (int j = threadIdx.y; j < 32; j += blockDim.y) {
				int c = c0 + j, r = r0 + threadIdx.x;
				if (r < rows && c < cols)
					y[off + (size_t)c * rows + r] = t[threadIdx.x][j];
			}
		}
	}
}

__global__ void
k_embed(float *y, const int *ids, size_t count, size_t dim, const float *table, int vocab,
    const float *pos, int npos)
{
	GRID_LOOP(i, count * dim) {
		size_t r = i / dim, j = i % dim;
		int id = ids[r];
		if (id < 0 || id >= vocab)
			id = 0;		/* as the CPU backend: never read out of bounds */
		float v = table[(size_t)id * dim + j];
		if (pos != NULL)
			v += pos[(r % (size_t)npos) * dim + j];
		y[i] = v;
	}
}

/* col[b, r, p] (row stride ldcol) = x[b] patch value r at output pixel p0 + p. */
template <typename T>
__global__ void
k_im2col(T *col, size_t ldcol, const float *x, int n, int cin, int h, int w, int kh, int kw,
    int stride, int pt, int pl, int ow, size_t p0, size_t np, int K)
{
	for (int b = blockIdx.z; b < n; b += gridDim.z) {
		for (int r = blockIdx.y; r < K; r += gridDim.y) {
			int ci = r / (kh * kw), rem = r % (kh * kw), ky = rem / kw, kx = rem % kw;
			const float *xc = x + ((size_t)b * cin + ci) * h * w;
			T *dst = col + ((size_t)b * K + r) * ldcol;
			for (size_t p = blockIdx.x * (size_t)blockDim.x + threadIdx.x; p < np;
			    p += (size_t)gridDim.x * blockDim.x) {
				size_t pix = p0 + p;
				int oy = (int)(pix / (size_t)ow), ox = (int)(pix % (size_t)ow);
				int iy = oy * stride - pt + ky, ix = ox * stride - pl + kx;
				float v = (iy >= 0 && iy < h && ix >= 0 && ix < w) ?
				    xc[(size_t)iy * w + ix] : 0.0f;
				d_store(dst + p, v);
			}
		}
	}
}

__device__ __forceinline__ float
warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

__device__ __forceinline__ float
warp_max(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

/* The sum (max) over the block, in every thread; red holds 32 floats. */
__device__ float
block_sum(float v, float *red)
{
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;

	v = warp_sum(v);
	__syncthreads();	/* red may still be read by a previous call */
	if (lane == 0)
		red[warp] = v;
	__syncthreads();
	return warp_sum(lane < nw ? red[lane] : 0.0f);
}

__device__ float
block_max(float v, float *red)
{
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;

	v = warp_max(v);
	__syncthreads();
	if (lane == 0)
		red[warp] = v;
	__syncthreads();
	return warp_max(lane < nw ? red[lane] : -INFINITY);
}

/* One block per (image, group): mean, then variance around it, then
 * normalize (+ SiLU).  In place allowed. */
__global__ void
k_group_norm(float *y, const float *x, int ch, int hw, int groups, float eps,
    const float *gamma, const float *beta, int act)
{
	__shared__ float red[32];
	int b = blockIdx.x / groups, g = blockIdx.x % groups, cg = ch / groups;
	size_t off = ((size_t)b * ch + (size_t)g * cg) * hw, cnt = (size_t)cg * hw;
	const float *xs = x + off;
	float *ys = y + off;
	float sum = 0.0f, sq = 0.0f;

	for (size_t i = threadIdx.x; i < cnt; i += blockDim.x)
		sum += xs[i];
	float mean = block_sum(sum, red) / (float)cnt;
	for (size_t i = threadIdx.x; i < cnt; i += blockDim.x) {
		float d = xs[i] - mean;
		sq += d * d;
	}
	float inv = 1.0f / sqrtf(block_sum(sq, red) / (float)cnt + eps);
	for (size_t i = threadIdx.x; i < cnt; i += blockDim.x) {
		int c = g * cg + (int)(i / (size_t)hw);
		float a = gamma != NULL ? gamma[c] * inv : inv;
		float v = (xs[i] - mean) * a + (beta != NULL ? beta[c] : 0.0f);
		ys[i] = act ? d_silu(v) : v;
	}
}

/* One warp per row. In place allowed. */
__global__ void
k_layer_norm(float *y, const float *x, int rows, int dim, float eps, const float *gamma,
    const float *beta)
{
	int row = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;

	if (row >= rows)
		return;		/* the whole warp */
	const float *xr = x + (size_t)row * dim;
	float *yr = y + (size_t)row * dim;
	float sum = 0.0f, sq = 0.0f;
	for (int i = lane; i < dim; i += 32)
		sum += xr[i];
	float mean = warp_sum(sum) / (float)dim;
	for (int i = lane; i < dim; i += 32) {
		float d = xr[i] - mean;
		sq += d * d;
	}
	float inv = 1.0f / sqrtf(warp_sum(sq) / (float)dim + eps);
	for (int i = lane; i < dim; i += 32)
		yr[i] = (xr[i] - mean) * inv * (gamma != NULL ? gamma[i] : 1.0f) +
		    (beta != NULL ? beta[i] : 0.0f);
}

/* RMSNorm, one warp per row.  In place allowed. */
__global__ void
k_rms_norm(float *y, const float *x, int rows, int dim, float eps, const float *weight)
{
	int row = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;

	if (row >= rows)
		return;		/* the whole warp */
	const float *xr = x + (size_t)row * dim;
	float *yr = y + (size_t)row * dim;
	float sq = 0.0f;
	for (int i = lane; i < dim; i += 32)
		sq += xr[i] * xr[i];
	float inv = 1.0f / sqrtf(warp_sum(sq) / (float)dim + eps);
	for (int i = lane; i < dim; i += 32)
		yr[i] = (weight != NULL ? weight[i] : 1.0f) * (xr[i] * inv);
}

/* LayerNorm without affine + adaLN modulation, one warp per row of
 * [b, tokens, dim].  In place allowed. */
__global__ void
k_layer_norm_modulate(float *y, const float *x, int rows, int tokens, int dim, float eps,
    const float *shift, const float *scale, int ldm)
{
	int row = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;

	if (row >= rows)
		return;		/* the whole warp */
	const float *xr = x + (size_t)row * dim;
	const float *sh = shift + (size_t)(row / tokens) * ldm;
	const float *sc = scale + (size_t)(row / tokens) * ldm;
	float *yr = y + (size_t)row * dim;
	float sum = 0.0f, sq = 0.0f;
	for (int i = lane; i < dim; i += 32)
		sum += xr[i];
	float mean = warp_sum(sum) / (float)dim;
	for (int i = lane; i < dim; i += 32) {
		float d = xr[i] - mean;
		sq += d * d;
	}
	float inv = 1.0f / sqrtf(warp_sum(sq) / (float)dim + eps);
	for (int i = lane; i < dim; i += 32)
		yr[i] = (xr[i] - mean) * inv * (1.0f + sc[i]) + sh[i];
}

/* Softmax of the rows of S[rows, lk] (row i of a block of nq query rows
 * starting at query q0; causal: keys after the query are zeroed; bias: NULL
 * or the head's [lq, lk] scores bias, added first). */
__global__ void
k_softmax_rows(float *S, int rows, int nq, int lk, int q0, int causal, const float *bias)
{
	__shared__ float red[32];

	for (int row = blockIdx.x; row < rows; row += gridDim.x) {
		float *r = S + (size_t)row * lk;
		int i = row % nq, valid = lk;
		if (causal && q0 + i + 1 < lk)
			valid = q0 + i + 1;
		float mx = -INFINITY, sum = 0.0f;
		if (bias != NULL) {
			const float *br = bias + (size_t)(q0 + i) * lk;
			for (int j = threadIdx.x; j < lk; j += blockDim.x)
				r[j] += br[j];
			__syncthreads();
		}
		for (int j = threadIdx.x; j < valid; j += blockDim.x)
			mx = fmaxf(mx, r[j]);
		mx = block_max(mx, red);
		for (int j = threadIdx.x; j < valid; j += blockDim.x) {
			float e = expf(r[j] - mx);
			r[j] = e;
			sum += e;
		}
		sum = block_sum(sum, red);
		float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
		for (int j = threadIdx.x; j < lk; j += blockDim.x)
			r[j] = j < valid ? r[j] * inv : 0.0f;
	}
}

/* Shared memory of the flash kernel for head dim dh in bucket E (floats:
 * Q tile, K tile with odd row strides against bank conflicts, V tile with
 * rows of 8E, probabilities). */
static size_t
flash_smem(int dh, int E)
{
	size_t qs = (size_t)(dh | 1);

	return (ATT_BQ * qs + ATT_BK * qs + (size_t)ATT_BK * 8 * E + ATT_BQ * ATT_PS) * sizeof(float);
}

/* Flash attention, one block per (batch*head, 64 query rows).  Thread t
 * owns query rows rg + 16a (rg = t / 8, a < 4) and, in the scores, keys
 * cg + 8b of the tile (cg = t % 8, b < 4), in the output dims cg + 8e
 * (e < E, E = ceil(dh / 8) rounded up to a bucket).  The 8 threads of a row
 * group are neighbouring lanes of one warp: they reduce with shuffles and
 * share their probabilities through shared memory with __syncwarp. */
template <int E>
__global__ void __launch_bounds__(ATT_THREADS)
k_flash(float *out, const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
    int lq, int lk, int heads, int dh, float scale, int causal)
{
	extern __shared__ float sm[];
	const int qs = dh | 1, vs = 8 * E;
	float *Qs = sm, *Ks = Qs + ATT_BQ * qs, *Vs = Ks + ATT_BK * qs, *Ps = Vs + ATT_BK * vs;
	const int tid = threadIdx.x, rg = tid >> 3, cg = tid & 7;
	const int bi = blockIdx.x / heads, hd = blockIdx.x % heads;
	const int q0 = blockIdx.y * ATT_BQ;
	const float *qb = q + (size_t)bi * lq * ldq + (size_t)hd * dh;
	const float *kb = k + (size_t)bi * lk * ldk + (size_t)hd * dh;
	const float *vb = v + (size_t)bi * lk * ldv + (size_t)hd * dh;
	float m[4], l[4], acc[4][E];

	for (int i = tid; i < ATT_BQ * dh; i += ATT_THREADS) {
		int r = i / dh, d = i % dh;
		Qs[r * qs + d] = q0 + r < lq ? qb[(size_t)(q0 + r) * ldq + d] * scale : 0.0f;
	}
	/* dims dh..8E-1 of V stay zero: the PV loop reads them unguarded */
	for (int i = tid; i < ATT_BK * vs; i += ATT_THREADS)
		Vs[i] = 0.0f;
#pragma unroll
	for (int a = 0; a < 4; a++) {
		m[a] = -INFINITY;
		l[a] = 0.0f;
#pragma unroll
		for (int e = 0; e < E; e++)
			acc[a][e] = 0.0f;
	}

	int kend = lk;
	if (causal && q0 + ATT_BQ < lk)
		kend = q0 + ATT_BQ;
	for (int k0 = 0; k0 < kend; k0 += ATT_BK) {
		__syncthreads();	/* the previous tile is used up */
		for (int i = tid; i < ATT_BK * dh; i += ATT_THREADS) {
			int c = i / dh, d = i % dh;
			bool in = k0 + c < lk;
			Ks[c * qs + d] = in ? kb[(size_t)(k0 + c) * ldk + d] : 0.0f;
			Vs[c * vs + d] = in ? vb[(size_t)(k0 + c) * ldv + d] : 0.0f;
		}
		__syncthreads();

		float s[4][4];
#pragma unroll
		for (int a = 0; a < 4; a++)
#pragma unroll
			for (int b = 0; b < 4; b++)
				s[a][b] = 0.0f;
#pragma unroll 4
		for (int d = 0; d < dh; d++) {
			float qa[4], kk[4];
#pragma unroll
			for (int a = 0; a < 4; a++)
				qa[a] = Qs[(rg + 16 * a) * qs + d];
#pragma unroll
			for (int b = 0; b < 4; b++)
				kk[b] = Ks[(cg + 8 * b) * qs + d];
#pragma unroll
			for (int a = 0; a < 4; a++)
#pragma unroll
				for (int b = 0; b < 4; b++)
					s[a][b] = fmaf(qa[a], kk[b], s[a][b]);
		}

#pragma unroll
		for (int a = 0; a < 4; a++) {
			int qi = q0 + rg + 16 * a;
			float mx = -INFINITY, rs = 0.0f, corr;
#pragma unroll
			for (int b = 0; b < 4; b++) {
				int kj = k0 + cg + 8 * b;
				if (kj >= lk || (causal && kj > qi))
					s[a][b] = -INFINITY;
				mx = fmaxf(mx, s[a][b]);
			}
			mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
			mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
			mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
			float mn = fmaxf(m[a], mx);
			if (mn == -INFINITY) {
				/* every key so far masked: nothing to weigh yet */
				corr = 1.0f;
#pragma unroll
				for (int b = 0; b < 4; b++)
					s[a][b] = 0.0f;
			} else {
				corr = expf(m[a] - mn);
#pragma unroll
				for (int b = 0; b < 4; b++) {
					s[a][b] = expf(s[a][b] - mn);
					rs += s[a][b];
				}
			}
			rs += __shfl_xor_sync(0xffffffffu, rs, 1);
			rs += __shfl_xor_sync(0xffffffffu, rs, 2);
			rs += __shfl_xor_sync(0xffffffffu, rs, 4);
			l[a] = l[a] * corr + rs;
			m[a] = mn;
#pragma unroll
			for (int e = 0; e < E; e++)
				acc[a][e] *= corr;
#pragma unroll
			for (int b = 0; b < 4; b++)
				Ps[(rg + 16 * a) * ATT_PS + cg + 8 * b] = s[a][b];
		}
		__syncwarp();	/* a row's probabilities come from its own 8 lanes */

		int cend = kend - k0 < ATT_BK ? kend - k0 : ATT_BK;
		for (int c = 0; c < cend; c++) {
			float pa[4], vv[E];
#pragma unroll
			for (int a = 0; a < 4; a++)
				pa[a] = Ps[(rg + 16 * a) * ATT_PS + c];
#pragma unroll
			for (int e = 0; e < E; e++)
				vv[e] = Vs[c * vs + cg + 8 * e];
#pragma unroll
			for (int a = 0; a < 4; a++)
#pragma unroll
				for (int e = 0; e < E; e++)
					acc[a][e] = fmaf(pa[a], vv[e], acc[a][e]);
		}
		__syncwarp();	/* Ps is rewritten by the next tile */
	}

	const int width = heads * dh;
#pragma unroll
	for (int a = 0; a < 4; a++) {
		int qi = q0 + rg + 16 * a;
		if (qi >= lq)
			continue;
		float inv = l[a] > 0.0f ? 1.0f / l[a] : 0.0f;
		float *o = out + ((size_t)bi * lq + qi) * width + (size_t)hd * dh;
#pragma unroll
		for (int e = 0; e < E; e++) {
			int d = cg + 8 * e;
			if (d < dh)
				o[d] = acc[a][e] * inv;
		}
	}
}

/* Head-dim buckets of the flash kernel: E = ceil(dh / 8) rounded up. */
static const int flash_buckets[8] = {1, 2, 4, 5, 8, 10, 16, 20};

static int
flash_bucket(int dh)
{
	int e = (dh + 7) / 8;

	for (int i = 0; i < 8; i++)
		if (e <= flash_buckets[i])
			return i;
	return -1;
}

/* The kernel of a bucket, for cudaFuncSetAttribute. */
static const void *
flash_kernel(int bucket)
{
	switch (flash_buckets[bucket]) {
	case 1: return (const void *)k_flash<1>;
	case 2: return (const void *)k_flash<2>;
	case 4: return (const void *)k_flash<4>;
	case 5: return (const void *)k_flash<5>;
	case 8: return (const void *)k_flash<8>;
	case 10: return (const void *)k_flash<10>;
	case 16: return (const void *)k_flash<16>;
	default: return (const void *)k_flash<20>;
	}
}


/* Flash attention on the tensor cores (fp16 mode): one block of 4 warps per
 * (batch*head, 64 query rows), each warp owning 16 rows.  Q (pre-scaled), K
 * and V tiles are rounded to F16 in shared memory, with the head dim padded
 * with zeros to DP (a multiple of 16); S = Q K^T and O += P V are WMMA
 * 16x16x16 products with F32 accumulation.  A warp's scores go through
 * shared memory (F32), where each row's online softmax runs on two lanes;
 * the probabilities go back as F16, and the output accumulates in shared
 * memory (F32), rescaled by the row's correction before each P V product. */

static size_t
tc_smem(int DP)
{
	return (size_t)3 * TC_BQ * (DP + 8) * sizeof(__half)	/* Q, K, V */
	    + (size_t)TC_WARPS * 16 * TC_SS * sizeof(float)	/* S */
	    + (size_t)TC_WARPS * 16 * TC_PS * sizeof(__half)	/* P */
	    + (size_t)TC_WARPS * 16 * (DP + 4) * sizeof(float);	/* O */
}

template <int DP>
__global__ void __launch_bounds__(TC_WARPS * 32)
k_flash_tc(float *out, const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
    int lq, int lk, int heads, int dh, float scale, int causal)
{
	using namespace nvcuda;
	extern __shared__ __align__(128) unsigned char tc_sm[];
	const int ld = DP + 8, lo = DP + 4;
	__half *Qs = (__half *)tc_sm, *Ks = Qs + TC_BQ * ld, *Vs = Ks + TC_BK * ld;
	float *Ss = (float *)(Vs + TC_BK * ld);
	__half *Ps = (__half *)(Ss + TC_WARPS * 16 * TC_SS);
	float *Os = (float *)(Ps + TC_WARPS * 16 * TC_PS);
	const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
	const int bi = blockIdx.x / heads, hd = blockIdx.x % heads;
	const int q0 = blockIdx.y * TC_BQ;
	const float *qb = q + (size_t)bi * lq * ldq + (size_t)hd * dh;
	const float *kb = k + (size_t)bi * lk * ldk + (size_t)hd * dh;
	const float *vb = v + (size_t)bi * lk * ldv + (size_t)hd * dh;
	float *Sw = Ss + warp * 16 * TC_SS, *Ow = Os + warp * 16 * lo;
	__half *Pw = Ps + warp * 16 * TC_PS;
	/* softmax: lane pair (r, half) for row r = lane / 2 of the warp */
	const int r = lane >> 1, hf = lane & 1, qi = q0 + warp * 16 + r;
	float m = -INFINITY, l = 0.0f;

	for (int i = tid; i < TC_BQ * DP; i += TC_WARPS * 32) {
		int row = i / DP, d = i % DP;
		float x = q0 + row < lq && d < dh ? qb[(size_t)(q0 + row) * ldq + d] * scale : 0.0f;
		Qs[row * ld + d] = __float2half(x);
	}
	for (int i = lane; i < 16 * lo; i += 32)
		Ow[i] = 0.0f;

	int kend = lk;
	if (causal && q0 + TC_BQ < lk)
		kend = q0 + TC_BQ;
	for (int k0 = 0; k0 < kend; k0 += TC_BK) {
		__syncthreads();	/* every warp is done with the previous K and V */
		for (int i = tid; i < TC_BK * DP; i += TC_WARPS * 32) {
			int c = i / DP, d = i % DP;
			bool in = k0 + c < lk && d < dh;
			Ks[c * ld + d] = __float2half(in ? kb[(size_t)(k0 + c) * ldk + d] : 0.0f);
			Vs[c * ld + d] = __float2half(in ? vb[(size_t)(k0 + c) * ldv + d] : 0.0f);
		}
		__syncthreads();

		/* S[16, 64] = Q_w K^T */
		for (int j = 0; j < TC_BK / 16; j++) {
			wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
			wmma::fill_fragment(acc, 0.0f);
#pragma unroll
			for (int kk = 0; kk < DP / 16; kk++) {
				wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
				wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
				wmma::load_matrix_sync(a, Qs + warp * 16 * ld + kk * 16, ld);
				wmma::load_matrix_sync(b, Ks + j * 16 * ld + kk * 16, ld);
				wmma::mma_sync(acc, a, b, acc);
			}
			wmma::store_matrix_sync(Sw + j * 16, acc, TC_SS, wmma::mem_row_major);
		}
		__syncwarp();

		/* the online softmax of row r over this tile's 32 + 32 keys */
		{
			float sv[32], mx = -INFINITY, rs = 0.0f, corr;
			const float *srow = Sw + r * TC_SS + hf * 32;
#pragma unroll
			for (int c = 0; c < 32; c++) {
				int kj = k0 + hf * 32 + c;
				sv[c] = kj >= lk || (causal && kj > qi) ? -INFINITY : srow[c];
				mx = fmaxf(mx, sv[c]);
			}
			mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
			float mn = fmaxf(m, mx);
			__half *prow = Pw + r * TC_PS + hf * 32;
			if (mn == -INFINITY) {
				corr = 1.0f;	/* every key so far masked */
#pragma unroll
				for (int c = 0; c < 32; c++)
					prow[c] = __float2half(0.0f);
			} else {
				corr = expf(m - mn);
#pragma unroll
				for (int c = 0; c < 32; c++) {
					float p = expf(sv[c] - mn);
					rs += p;
					prow[c] = __float2half(p);
				}
			}
			rs += __shfl_xor_sync(0xffffffffu, rs, 1);
			l = l * corr + rs;
			m = mn;
			float *orow = Ow + r * lo;
			for (int d = hf * (DP / 2); d < (hf + 1) * (DP / 2); d++)
				orow[d] *= corr;
		}
		__syncwarp();

		/* O_w[16, DP] += P V */
		for (int jd = 0; jd < DP / 16; jd++) {
			wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
			wmma::load_matrix_sync(acc, Ow + jd * 16, lo, wmma::mem_row_major);
#pragma unroll
			for (int kk = 0; kk < TC_BK / 16; kk++) {
				wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
				wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b;
				wmma::load_matrix_sync(a, Pw + kk * 16, TC_PS);
				wmma::load_matrix_sync(b, Vs + kk * 16 * ld + jd * 16, ld);
				wmma::mma_sync(acc, a, b, acc);
			}
			wmma::store_matrix_sync(Ow + jd * 16, acc, lo, wmma::mem_row_major);
		}
		__syncwarp();
	}

	if (qi < lq) {
		const int width = heads * dh;
		float inv = l > 0.0f ? 1.0f / l : 0.0f;
		float *o = out + ((size_t)bi * lq + qi) * width + (size_t)hd * dh;
		const float *orow = Ow + r * lo;
		for (int d = hf; d < dh; d += 2)
			o[d] = orow[d] * inv;
	}
}

/* The tensor-core kernel of a padded head dim (16..160). */
static const void *
flash_tc_kernel(int DP)
{
	switch (DP) {
	case 16: return (const void *)k_flash_tc<16>;
	case 32: return (const void *)k_flash_tc<32>;
	case 48: return (const void *)k_flash_tc<48>;
	case 64: return (const void *)k_flash_tc<64>;
	case 80: return (const void *)k_flash_tc<80>;
	case 96: return (const void *)k_flash_tc<96>;
	case 112: return (const void *)k_flash_tc<112>;
	case 128: return (const void *)k_flash_tc<128>;
	case 144: return (const void *)k_flash_tc<144>;
	default: return (const void *)k_flash_tc<160>;
	}
}

/* ------------------------------------------------------------ weights */

static uint64_t
mix(uint64_t h, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/* A fingerprint of a tensor's bytes: all of a small one, 16 windows of 32
 * bytes spread over a big one. */
static uint64_t
fingerprint(const void *data, size_t bytes)
{
	const unsigned char *p = (const unsigned char *)data;
	uint64_t h = 0xcbf29ce484222325ull ^ bytes;

	if (bytes <= 8192)
		return mix(h, p, bytes);
	for (int i = 0; i < 16; i++) {
		size_t at = (bytes - 32) / 15 * (size_t)i;
		h = mix(h, p + at, 32);
	}
	return h;
}

static size_t
hash_ptr(const void *p)
{
	uint64_t v = (uint64_t)(uintptr_t)p;

	v ^= v >> 33;
	v *= 0xff51afd7ed558ccdull;
	v ^= v >> 33;
	return (size_t)v;
}

static void
wtab_rehash(struct cuda_state *s, size_t cap)
{
	struct wentry *old = s->wtab;
	size_t oldcap = s->wcap;

	s->wtab = (struct wentry *)calloc(cap, sizeof *s->wtab);
	if (s->wtab == NULL) {
		/* Keep the old table (at most about half full): lookups go on. */
		fail_op(SD_EINTERNAL, "out of memory (weight table)");
		s->wtab = old;
		return;
	}
	s->wcap = cap;
	for (size_t i = 0; i < oldcap; i++) {
		if (old[i].key == NULL)
			continue;
		size_t j = hash_ptr(old[i].key) & (cap - 1);
		while (s->wtab[j].key != NULL)
			j = (j + 1) & (cap - 1);
		s->wtab[j] = old[i];
	}
	free(old);
}

/* The cache entry of t (a new, empty one when t was not seen, or when its
 * data pointer now holds other data).  Valid until the next lookup. */
static struct wentry *
wlookup(struct cuda_state *s, const struct sd_tensor *t, const char *op)
{
	int64_t numel = sd_tensor_numel(t);
	size_t esz = sd_dtype_size(t->dtype);
	uint64_t print;
	size_t i;

	if (t->data == NULL || numel <= 0 || esz == 0) {
		char msg[256];
		snprintf(msg, sizeof msg, "weight %s is empty or has no data",
		    t->name ? t->name : "(unnamed)");
		die(op, msg);
		return NULL;
	}
	print = fingerprint(t->data, (size_t)numel * esz);
	if ((s->wcount + 1) * 2 > s->wcap)
		wtab_rehash(s, s->wcap ? s->wcap * 2 : 1024);
	for (i = hash_ptr(t->data) & (s->wcap - 1);; i = (i + 1) & (s->wcap - 1)) {
		struct wentry *e = &s->wtab[i];
		if (e->key == NULL) {
			e->key = t->data;
			e->dtype = t->dtype;
			e->numel = numel;
			e->print = print;
			s->wcount++;
			return e;
		}
		if (e->key != t->data)
			continue;
		if (e->dtype != (int)t->dtype || e->numel != numel || e->print != print) {
			/* the same address holds other data now */
			ck(cudaStreamSynchronize(s->stream), op);
			ck(cudaFree(e->f32), op);
			ck(cudaFree(e->f16), op);
			e->f32 = NULL;
			e->f16 = NULL;
			e->dtype = t->dtype;
			e->numel = numel;
			e->print = print;
		}
		return e;
	}
}

/* t's data on the device in the staging buffer, as F32, F16 or BF16 (other
 * float dtypes are widened on the host); *dtype gets which. */
static const void *
stage_weight(struct cuda_state *s, const struct sd_tensor *t, size_t n, int *dtype, const char *op)
{
	void *p;

	if (t->dtype == SD_F32 || t->dtype == SD_F16 || t->dtype == SD_BF16) {
		size_t bytes = n * sd_dtype_size(t->dtype);
		p = grow(s, &s->stage, bytes, op, "weight staging");
		ck(cudaMemcpyAsync(p, t->data, bytes, cudaMemcpyHostToDevice, s->stream), op);
		*dtype = t->dtype;
		return p;
	}
	float *h = (float *)malloc(n * sizeof *h);
	if (h == NULL) {
		fail_op(SD_EINTERNAL, "out of memory (%zu MiB to widen weight %s)",
		    (n * 4) >> 20, t->name ? t->name : "(unnamed)");
		*dtype = SD_F32;
		return NULL;
	}
	if (sd_convert_to_f32(h, t->data, t->dtype, n) < 0) {
		char msg[256];
		snprintf(msg, sizeof msg, "weight %s has dtype %s, not a float type",
		    t->name ? t->name : "(unnamed)", sd_dtype_name(t->dtype));
		die(op, msg);
		free(h);
		*dtype = SD_F32;
		return NULL;
	}
	p = grow(s, &s->stage, n * sizeof(float), op, "weight staging");
	ck(cudaMemcpyAsync(p, h, n * sizeof(float), cudaMemcpyHostToDevice, s->stream), op);
	ck(cudaStreamSynchronize(s->stream), op);
	free(h);
	*dtype = SD_F32;
	return p;
}

/* The weight as F32 on the device (uploaded on first use). */
static const float *
dev_f32(struct cuda_state *s, const struct sd_tensor *t, const char *op)
{
	struct wentry *e;

	if (t == NULL)
		return NULL;
	e = wlookup(s, t, op);
	if (e == NULL)
		return NULL;	/* failed: see cuda_take_error */
	if (e->f32 == NULL) {
		size_t n = (size_t)e->numel;
		float *d = (float *)dmalloc(n * sizeof(float), op, t->name ? t->name : "a weight");
		s->weight_bytes += n * sizeof(float);
		if (t->dtype == SD_F32) {
			ck(cudaMemcpyAsync(d, t->data, n * sizeof(float), cudaMemcpyHostToDevice,
			    s->stream), op);
		} else {
			int dt;
			const void *raw = stage_weight(s, t, n, &dt, op);
			k_convert<float><<<nblocks(n, THREADS), THREADS, 0, s->stream>>>(d, raw, dt, n);
			ck(cudaGetLastError(), op);
		}
		e->f32 = d;
	}
	return e->f32;
}

/* The weight as F16 on the device (uploaded on first use). */
static const __half *
dev_f16(struct cuda_state *s, const struct sd_tensor *t, const char *op)
{
	struct wentry *e = wlookup(s, t, op);

	if (e == NULL)
		return NULL;	/* failed: see cuda_take_error */
	if (e->f16 == NULL) {
		size_t n = (size_t)e->numel;
		__half *d = (__half *)dmalloc(n * sizeof(__half), op, t->name ? t->name : "a weight");
		s->weight_bytes += n * sizeof(__half);
		if (t->dtype == SD_F16) {
			ck(cudaMemcpyAsync(d, t->data, n * sizeof(__half), cudaMemcpyHostToDevice,
			    s->stream), op);
		} else {
			int dt;
			const void *raw = stage_weight(s, t, n, &dt, op);
			k_convert<__half><<<nblocks(n, THREADS), THREADS, 0, s->stream>>>(d, raw, dt, n);
			ck(cudaGetLastError(), op);
		}
		e->f16 = d;
	}
	return e->f16;
}

/* A GEMM weight in the precision mode's type. */
static const void *
gemm_weight(struct cuda_state *s, const struct sd_tensor *t, const char *op)
{
	return s->fp16 ? (const void *)dev_f16(s, t, op) : (const void *)dev_f32(s, t, op);
}

/* x (n floats) as F16 in the scratch buffer. */
static const __half *
to_half(struct cuda_state *s, const float *x, size_t n, const char *op)
{
	__half *h = (__half *)grow(s, &s->half, n * sizeof(__half), op, "the F16 operand");

	k_convert<__half><<<nblocks(n, THREADS), THREADS, 0, s->stream>>>(h, x, SD_F32, n);
	ck(cudaGetLastError(), op);
	return h;
}

/* Column-major C[m, n] = op(A)[m, k] op(B)[k, n] (alpha, beta), batched with
 * strides; A and B in F16 when half, else F32; C F32; F32 accumulation. */
static void
gemm(struct cuda_state *s, const char *op, int half, cublasOperation_t ta, cublasOperation_t tb,
    int m, int n, int k, float alpha, const void *A, int lda, long long sa,
    const void *B, int ldb, long long sb, float beta, float *C, int ldc, long long sc, int batch)
{
	cudaDataType_t in = half ? CUDA_R_16F : CUDA_R_32F;

	if (m <= 0 || n <= 0 || batch <= 0)
		return;
	if (batch == 1)
		ckb(cublasGemmEx(s->blas, ta, tb, m, n, k, &alpha, A, in, lda, B, in, ldb, &beta,
		    C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT), op);
	else
		ckb(cublasGemmStridedBatchedEx(s->blas, ta, tb, m, n, k, &alpha, A, in, lda, sa,
		    B, in, ldb, sb, &beta, C, CUDA_R_32F, ldc, sc, batch, CUBLAS_COMPUTE_32F,
		    CUBLAS_GEMM_DEFAULT), op);
}

/* ------------------------------------------------------------ the backend */

static void
release(struct cuda_state *s)
{
	/* best effort: report, never exit, while tearing down */
	cudaError_t e = cudaSuccess, r;

#define TRY(call) do { if ((r = (call)) != cudaSuccess && e == cudaSuccess) e = r; } while (0)
	if (s->stream != NULL)
		TRY(cudaStreamSynchronize(s->stream));
	for (size_t i = 0; i < s->wcap; i++) {
		if (s->wtab[i].key == NULL)
			continue;
		TRY(cudaFree(s->wtab[i].f32));
		TRY(cudaFree(s->wtab[i].f16));
	}
	free(s->wtab);
	TRY(cudaFree(s->col.p));
	TRY(cudaFree(s->half.p));
	TRY(cudaFree(s->stage.p));
	TRY(cudaFree(s->ids.p));
	TRY(cudaFree(s->scores.p));
	TRY(cudaFree(s->tmp.p));
	if (s->blas != NULL && cublasDestroy(s->blas) != CUBLAS_STATUS_SUCCESS && e == cudaSuccess)
		e = cudaErrorUnknown;
	TRY(cudaFree(s->workspace));
	if (s->stream != NULL)
		TRY(cudaStreamDestroy(s->stream));
#undef TRY
	if (e != cudaSuccess)
		fprintf(stderr, "sdbatch: CUDA error while releasing the device: %s\n",
		    cudaGetErrorString(e));
	free(s);
}

static int
cuda_init(struct sd_ctx *c, int device, struct sd_error *err)
{
	struct cuda_state *s;
	const char *env;
	cudaError_t e;
	cublasStatus_t st;
	struct cudaDeviceProp prop;
	int count = 0, fp16 = 1;

	env = getenv("SDBATCH_CUDA_PRECISION");
	if (env != NULL && *env != '\0') {
		if (strcmp(env, "fp16") == 0)
			fp16 = 1;
		else if (strcmp(env, "fp32") == 0)
			fp16 = 0;
		else
			return sd_fail(err, SD_ECONFIG, "SDBATCH_CUDA_PRECISION=\"%s\": "
			    "use fp16 or fp32", env);
	}
	e = cudaGetDeviceCount(&count);
	if (e != cudaSuccess) {
		(void)cudaGetLastError();
		return sd_fail(err, SD_EUNAVAILABLE, "no usable CUDA device (cuda:%d): %s",
		    device, cudaGetErrorString(e));
	}
	if (device < 0 || device >= count)
		return sd_fail(err, SD_EUNAVAILABLE, "no usable CUDA device cuda:%d: "
		    "%d device%s found", device, count, count == 1 ? "" : "s");
	e = cudaSetDevice(device);
	if (e == cudaSuccess)
		e = cudaGetDeviceProperties(&prop, device);
	if (e != cudaSuccess) {
		(void)cudaGetLastError();
		return sd_fail(err, SD_EUNAVAILABLE, "no usable CUDA device (cuda:%d): %s",
		    device, cudaGetErrorString(e));
	}

	s = (struct cuda_state *)calloc(1, sizeof *s);
	if (s == NULL)
		return sd_fail(err, SD_EINTERNAL, "out of memory");
	s->device = device;
	s->fp16 = fp16;
	env = getenv("SDBATCH_CUDA_SYNC");
	s->sync = env != NULL && *env != '\0' && strcmp(env, "0") != 0;
	env = getenv("SDBATCH_CUDA_ATTENTION");
	s->gemm_attention = env != NULL && strcmp(env, "gemm") == 0;
	env = getenv("SDBATCH_CUDA_PROFILE");
	if (env != NULL && *env != '\0' && strcmp(env, "0") != 0 &&
	    (s->prof = (struct profile *)calloc(1, sizeof *s->prof)) != NULL) {
		s->prof->last = mono_now();
		if (cudaEventCreate(&s->prof->ev0) != cudaSuccess ||
		    cudaEventCreate(&s->prof->ev1) != cudaSuccess) {
			(void)cudaGetLastError();
			free(s->prof);
			s->prof = NULL;
		}
	}

	e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking);
	if (e != cudaSuccess) {
		s->stream = NULL;
		goto cuda_fail;
	}
	st = cublasCreate(&s->blas);
	if (st != CUBLAS_STATUS_SUCCESS) {
		s->blas = NULL;
		sd_fail(err, SD_EUNAVAILABLE, "cuda:%d (%s): cuBLAS: %s", device, prop.name,
		    cublasGetStatusString(st));
		goto fail;
	}
	e = cudaMalloc(&s->workspace, BLAS_WORKSPACE);
	if (e != cudaSuccess) {
		s->workspace = NULL;
		goto cuda_fail;
	}
	/* cublasSetStream resets the workspace: set it afterwards */
	if ((st = cublasSetStream(s->blas, s->stream)) != CUBLAS_STATUS_SUCCESS ||
	    (st = cublasSetWorkspace(s->blas, s->workspace, BLAS_WORKSPACE)) != CUBLAS_STATUS_SUCCESS ||
	    (st = cublasSetMathMode(s->blas, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS) {
		sd_fail(err, SD_EUNAVAILABLE, "cuda:%d (%s): cuBLAS: %s", device, prop.name,
		    cublasGetStatusString(st));
		goto fail;
	}

	/* Are the kernels built for this device? */
	{
		struct cudaFuncAttributes fa;
		e = cudaFuncGetAttributes(&fa, (const void *)k_unary);
		if (e != cudaSuccess) {
			(void)cudaGetLastError();
			sd_fail(err, SD_EUNAVAILABLE, "cuda:%d (%s, compute capability %d.%d): %s "
			    "(rebuild with NVCCFLAGS for this GPU)", device, prop.name, prop.major,
			    prop.minor, cudaGetErrorString(e));
			goto fail;
		}
	}
	/* The flash kernel's shared memory beyond 48 KiB must be asked for;
	 * buckets that cannot have it use the GEMM attention. */
	for (int i = 0; i < 8; i++) {
		size_t need = flash_smem(8 * flash_buckets[i], flash_buckets[i]);
		e = cudaFuncSetAttribute(flash_kernel(i),
		    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)need);
		s->flash_ok[i] = e == cudaSuccess;
		if (e != cudaSuccess)
			(void)cudaGetLastError();
	}
	/* The tensor-core kernels need compute capability 7.0 (WMMA). */
	for (int dp = 16; dp <= TC_MAX_DH; dp += 16) {
		e = cudaFuncSetAttribute(flash_tc_kernel(dp),
		    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)tc_smem(dp));
		s->tc_ok[dp / 16] = e == cudaSuccess && prop.major >= 7;
		if (e != cudaSuccess)
			(void)cudaGetLastError();
	}

	usage_state = s;
	note_usage(s);
	s->mem_base = s->mem_peak;
	snprintf(s->desc, sizeof s->desc, "cuda:%d (%.200s, %.1f GiB)", device, prop.name,
	    (double)prop.totalGlobalMem / (double)((size_t)1 << 30));
	c->state = s;
	return 0;

cuda_fail:
	(void)cudaGetLastError();
	sd_fail(err, SD_EUNAVAILABLE, "cuda:%d (%s): %s", device, prop.name, cudaGetErrorString(e));
fail:
	release(s);
	return -1;
}

static void
cuda_fini(struct sd_ctx *c)
{
	struct cuda_state *s = (struct cuda_state *)c->state;

	if (s == NULL)
		return;
	if (usage_state == s)
		usage_state = NULL;
	if (s->prof != NULL) {
		prof_print(s->prof);
		fprintf(stderr, "  device memory: peak %zu MiB in use (%zu at start); weights %zu MiB; "
		    "scratch: im2col %zu, F16 operand %zu, staging %zu, scores %zu, copy %zu MiB\n",
		    s->mem_peak >> 20, s->mem_base >> 20, s->weight_bytes >> 20, s->col.cap >> 20,
		    s->half.cap >> 20, s->stage.cap >> 20, s->scores.cap >> 20, s->tmp.cap >> 20);
		(void)cudaEventDestroy(s->prof->ev0);
		(void)cudaEventDestroy(s->prof->ev1);
		free(s->prof);
		s->prof = NULL;
	}
	release(s);
	c->state = NULL;
}

static void
cuda_device_memory(const struct sd_ctx *c, size_t *peak, size_t *base)
{
	const struct cuda_state *s = (const struct cuda_state *)c->state;

	*peak = s->mem_peak;
	*base = s->mem_base;
}

static const char *
cuda_describe(const struct sd_ctx *c)
{
	return ((const struct cuda_state *)c->state)->desc;
}

static void *
cuda_mem_alloc(struct sd_ctx *c, size_t bytes)
{
	void *p = NULL;
	cudaError_t e;

	e = cudaMalloc(&p, bytes ? bytes : 16);
	if (e == cudaErrorMemoryAllocation) {
		(void)cudaGetLastError();	/* not sticky: clear it */
		return NULL;
	}
	ck(e, "mem_alloc");
	note_usage((struct cuda_state *)c->state);
	if (((struct cuda_state *)c->state)->prof != NULL)
		((struct cuda_state *)c->state)->prof->allocated = 1;
	return p;
}

static void
cuda_mem_free(struct sd_ctx *c, void *p)
{
	struct cuda_state *s = (struct cuda_state *)c->state;

	if (p == NULL)
		return;
	ck(cudaStreamSynchronize(s->stream), "mem_free");
	ck(cudaFree(p), "mem_free");
}

static void
cuda_upload(struct sd_ctx *c, float *dst, const float *host, size_t n)
{
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);

	if (n == 0)
		return;
	/* from pageable memory the copy is staged before the call returns, so
	 * the caller may reuse host at once */
	ck(cudaMemcpyAsync(dst, host, n * sizeof *dst, cudaMemcpyHostToDevice, s->stream), "upload");
	done(s, "upload");
}

static void
cuda_download(struct sd_ctx *c, float *host, const float *src, size_t n)
{
	struct cuda_state *s = (struct cuda_state *)c->state;

	if (n == 0)
		return;
	ck(cudaMemcpyAsync(host, src, n * sizeof *host, cudaMemcpyDeviceToHost, s->stream), "download");
	ck(cudaStreamSynchronize(s->stream), "download");
	if (s->prof != NULL)	/* host work until the next op is not the device's */
		s->prof->last = mono_now();
}

static void
cuda_copy(struct sd_ctx *c, float *y, const float *x, size_t n)
{
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);

	if (y == x || n == 0)
		return;
	if ((x < y && x + n > y) || (y < x && y + n > x)) {
		/* overlapping: through scratch, as memmove would */
		float *t = (float *)grow(s, &s->tmp, n * sizeof *t, "copy", "the copy buffer");
		ck(cudaMemcpyAsync(t, x, n * sizeof *t, cudaMemcpyDeviceToDevice, s->stream), "copy");
		x = t;
	}
	ck(cudaMemcpyAsync(y, x, n * sizeof *y, cudaMemcpyDeviceToDevice, s->stream), "copy");
	done(s, "copy");
}

static void
check_numel(const struct sd_tensor *t, int64_t want, const char *op)
{
	char msg[256];

	if (sd_tensor_numel(t) == want)
		return;
	snprintf(msg, sizeof msg, "weight %s has %lld elements, the op needs %lld",
	    t->name ? t->name : "(unnamed)", (long long)sd_tensor_numel(t), (long long)want);
	die(op, msg);
}

static void
cuda_conv2d(struct sd_ctx *c, float *y, const float *x, int n, int cin, int h, int w,
    const struct sd_tensor *weight, const struct sd_tensor *bias, int stride,
    int pt, int pl, int pb, int pr)
{
	static const char op[] = "conv2d";
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);
	int cout = (int)weight->shape[0], kh = (int)weight->shape[2], kw = (int)weight->shape[3];
	int oh = (h + pt + pb - kh) / stride + 1, ow = (w + pl + pr - kw) / stride + 1;
	size_t ohw = (size_t)oh * ow, K = (size_t)cin * kh * kw;
	size_t esz = s->fp16 ? sizeof(__half) : sizeof(float);
	const void *W;

	if (n <= 0 || cout <= 0 || oh <= 0 || ow <= 0)
		return;
	check_numel(weight, (int64_t)cout * (int64_t)K, op);
	prof_key(s, "conv2d %dx%d%s %dx%d cin %d cout %d", kh, kw, stride > 1 ? " s2" : "", h, w,
	    cin, cout);
	W = gemm_weight(s, weight, op);
	/* Row-major Y[cout, ohw] = W[cout, K] col[K, ohw] is, column-major,
	 * Y^T[ohw, cout] = col^T[ohw, K] W^T[K, cout]: the row-major buffers as
	 * they are, no transposes; one GEMM per image, batched. */
	if (kh == 1 && kw == 1 && stride == 1 && pt == 0 && pl == 0 && pb == 0 && pr == 0) {
		const void *A = x;
		if (s->fp16)
			A = to_half(s, x, (size_t)n * cin * ohw, op);
		gemm(s, op, s->fp16, CUBLAS_OP_N, CUBLAS_OP_N, (int)ohw, cout, cin, 1.0f,
		    A, (int)ohw, (long long)cin * ohw, W, cin, 0, 0.0f,
		    y, (int)ohw, (long long)cout * ohw, n);
	} else {
		/* im2col over tiles of output pixels (all images at once) */
		size_t tile = COL_TILE_BYTES / (esz * K * (size_t)n) / 64 * 64;
		if (tile < 64)
			tile = 64;
		if (tile > ohw)
			tile = ohw;
		size_t ldcol = (tile + 7) / 8 * 8;
		void *col = grow(s, &s->col, (size_t)n * K * ldcol * esz, op, "the im2col tile");
		for (size_t p0 = 0; p0 < ohw; p0 += tile) {
			size_t np = ohw - p0 < tile ? ohw - p0 : tile;
			dim3 grid(nblocks(np, THREADS), cap_grid(K, 65535), cap_grid((size_t)n, 65535));
			if (s->fp16)
				k_im2col<__half><<<grid, THREADS, 0, s->stream>>>((__half *)col, ldcol,
				    x, n, cin, h, w, kh, kw, stride, pt, pl, ow, p0, np, (int)K);
			else
				k_im2col<float><<<grid, THREADS, 0, s->stream>>>((float *)col, ldcol,
				    x, n, cin, h, w, kh, kw, stride, pt, pl, ow, p0, np, (int)K);
			ck(cudaGetLastError(), op);
			gemm(s, op, s->fp16, CUBLAS_OP_N, CUBLAS_OP_N, (int)np, cout, (int)K, 1.0f,
			    col, (int)ldcol, (long long)(K * ldcol), W, (int)K, 0, 0.0f,
			    y + p0, (int)ohw, (long long)cout * ohw, n);
		}
	}
	if (bias != NULL) {
		const float *B = dev_f32(s, bias, op);
		size_t rows = (size_t)n * cout;
		dim3 grid(nblocks(ohw, THREADS) < 64 ? nblocks(ohw, THREADS) : 64, cap_grid(rows, 65535));
		k_add_rows<<<grid, THREADS, 0, s->stream>>>(y, B, rows, (size_t)cout, ohw);
	}
	done(s, op);
}

static void
cuda_linear(struct sd_ctx *c, float *y, const float *x, int m, int k,
    const struct sd_tensor *weight, const struct sd_tensor *bias)
{
	static const char op[] = "linear";
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);
	int nout = (int)weight->shape[0];
	const void *W, *X = x;

	if (m <= 0 || nout <= 0)
		return;
	check_numel(weight, (int64_t)nout * k, op);
	prof_key(s, "linear m %d k %d n %d", m, k, nout);
	W = gemm_weight(s, weight, op);
	if (s->fp16)
		X = to_half(s, x, (size_t)m * k, op);
	/* Row-major Y[m, nout] = X[m, k] W[nout, k]^T is, column-major,
	 * Y^T[nout, m] = W[nout, k] X^T[k, m]: the row-major W buffer is W^T
	 * column-major, so it goes in transposed; X as it is. */
	gemm(s, op, s->fp16, CUBLAS_OP_T, CUBLAS_OP_N, nout, m, k, 1.0f, W, k, 0, X, k, 0,
	    0.0f, y, nout, 0, 1);
	if (bias != NULL) {
		const float *B = dev_f32(s, bias, op);
		size_t total = (size_t)m * nout;
		k_add_cols<<<nblocks(total, THREADS), THREADS, 0, s->stream>>>(y, B, (size_t)m,
		    (size_t)nout);
	}
	done(s, op);
}

static void
cuda_group_norm(struct sd_ctx *c, float *y, const float *x, int n, int ch, int hw,
    int groups, float eps, const struct sd_tensor *gamma, const struct sd_tensor *beta, int act)
{
	static const char op[] = "group_norm";
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);
	const float *G = dev_f32(s, gamma, op), *B = dev_f32(s, beta, op);

	if (n <= 0 || groups <= 0 || ch <= 0 || hw <= 0)
		return;
	prof_key(s, "group_norm ch %d hw %d", ch, hw);
	k_group_norm<<<(unsigned)n * groups, 512, 0, s->stream>>>(y, x, ch, hw, groups, eps, G, B, act);
	done(s, op);
}

static void
cuda_layer_norm(struct sd_ctx *c, float *y, const float *x, int rows, int dim,
    float eps, const struct sd_tensor *gamma, const struct sd_tensor *beta)
{
	static const char op[] = "layer_norm";
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);
	const float *G = dev_f32(s, gamma, op), *B = dev_f32(s, beta, op);

	if (rows <= 0 || dim <= 0)
		return;
	k_layer_norm<<<(unsigned)((rows + 7) / 8), THREADS, 0, s->stream>>>(y, x, rows, dim, eps, G, B);
	done(s, op);
}

/* Attention by blocks of query rows: scores by SGEMM, softmax, SGEMM. */
static void
attention_gemm(struct cuda_state *s, float *out, const float *q, int ldq,
    const float *k, int ldk, const float *v, int ldv,
    int b, int lq, int lk, int heads, int dh, float scale, int causal, const float *bias)
{
	static const char op[] = "attention";
	int width = heads * dh;
	size_t qb = SCORE_FLOATS / (size_t)lk;

	if (qb < 1)
		qb = 1;
	if (qb > (size_t)lq)
		qb = (size_t)lq;
	float *S = (float *)grow(s, &s->scores, qb * lk * sizeof(float), op, "the attention scores");
	for (int bi = 0; bi < b; bi++) {
		for (int hd = 0; hd < heads; hd++) {
			const float *qh = q + (size_t)bi * lq * ldq + (size_t)hd * dh;
			const float *kh = k + (size_t)bi * lk * ldk + (size_t)hd * dh;
			const float *vh = v + (size_t)bi * lk * ldv + (size_t)hd * dh;
			float *oh = out + (size_t)bi * lq * width + (size_t)hd * dh;
			for (int q0 = 0; q0 < lq; q0 += (int)qb) {
				int nq = lq - q0 < (int)qb ? lq - q0 : (int)qb;
				/* S[nq, lk] = scale Q K^T, i.e. column-major
				 * S^T[lk, nq] = K[lk, dh] Q^T[dh, nq] */
				gemm(s, op, 0, CUBLAS_OP_T, CUBLAS_OP_N, lk, nq, dh, scale,
				    kh, ldk, 0, qh + (size_t)q0 * ldq, ldq, 0, 0.0f, S, lk, 0, 1);
				k_softmax_rows<<<cap_grid((size_t)nq, 1u << 20), THREADS, 0, s->stream>>>(
				    S, nq, nq, lk, q0, causal,
				    bias != NULL ? bias + (size_t)hd * lq * lk : NULL);
				ck(cudaGetLastError(), op);
				/* O[nq, dh] = S V, i.e. O^T[dh, nq] = V^T[dh, lk] S^T[lk, nq] */
				gemm(s, op, 0, CUBLAS_OP_N, CUBLAS_OP_N, dh, nq, lk, 1.0f,
				    vh, ldv, 0, S, lk, 0, 0.0f, oh + (size_t)q0 * width, width, 0, 1);
			}
		}
	}
}

static void
cuda_attention(struct sd_ctx *c, float *out, const float *q, int ldq,
    const float *k, int ldk, const float *v, int ldv,
    int b, int lq, int lk, int heads, int dh, float scale, int causal, const float *bias)
{
	static const char op[] = "attention";
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);
	int bucket = flash_bucket(dh);

	if (b <= 0 || lq <= 0 || heads <= 0 || dh <= 0)
		return;
	prof_key(s, "attention lq %d lk %d dh %d%s", lq, lk, dh,
	    s->fp16 && !s->gemm_attention && dh <= TC_MAX_DH ? " (tc)" : "");
	if (lk <= 0) {
		ck(cudaMemsetAsync(out, 0, (size_t)b * lq * heads * dh * sizeof *out, s->stream), op);
	} else if (bias != NULL) {
		/* T5's position bias (a few hundred tokens): scores by SGEMM */
		attention_gemm(s, out, q, ldq, k, ldk, v, ldv, b, lq, lk, heads, dh, scale, causal,
		    bias);
	} else if (s->fp16 && !s->gemm_attention && dh <= TC_MAX_DH &&
	    s->tc_ok[(dh + 15) / 16] && (size_t)lq <= (size_t)TC_BQ * 65535) {
		int dp = (dh + 15) / 16 * 16;
		dim3 grid((unsigned)b * heads, (unsigned)((lq + TC_BQ - 1) / TC_BQ));
		size_t smem = tc_smem(dp);
		switch (dp) {
#define FLASH_TC(D) case D: k_flash_tc<D><<<grid, TC_WARPS * 32, smem, s->stream>>>(out, q, \
	    ldq, k, ldk, v, ldv, lq, lk, heads, dh, scale, causal); break
		FLASH_TC(16); FLASH_TC(32); FLASH_TC(48); FLASH_TC(64); FLASH_TC(80);
		FLASH_TC(96); FLASH_TC(112); FLASH_TC(128); FLASH_TC(144); FLASH_TC(160);
#undef FLASH_TC
		}
	} else if (bucket >= 0 && s->flash_ok[bucket] && !s->gemm_attention &&
	    (size_t)lq <= (size_t)ATT_BQ * 65535) {
		dim3 grid((unsigned)b * heads, (unsigned)((lq + ATT_BQ - 1) / ATT_BQ));
		size_t smem = flash_smem(dh, flash_buckets[bucket]);
		switch (flash_buckets[bucket]) {
#define FLASH(E) case E: k_flash<E><<<grid, ATT_THREADS, smem, s->stream>>>(out, q, ldq, \
	    k, ldk, v, ldv, lq, lk, heads, dh, scale, causal); break
		FLASH(1); FLASH(2); FLASH(4); FLASH(5); FLASH(8); FLASH(10); FLASH(16); FLASH(20);
#undef FLASH
		}
	} else {
		attention_gemm(s, out, q, ldq, k, ldk, v, ldv, b, lq, lk, heads, dh, scale, causal,
		    NULL);
	}
	done(s, op);
}

static void
cuda_rms_norm(struct sd_ctx *c, float *y, const float *x, int rows, int dim,
    float eps, const struct sd_tensor *weight)
{
	static const char op[] = "rms_norm";
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);
	const float *W = dev_f32(s, weight, op);

	if (rows <= 0 || dim <= 0)
		return;
	k_rms_norm<<<(unsigned)((rows + 7) / 8), THREADS, 0, s->stream>>>(y, x, rows, dim, eps, W);
	done(s, op);
}

static void
cuda_layer_norm_modulate(struct sd_ctx *c, float *y, const float *x, int b, int tokens,
    int dim, float eps, const float *shift, const float *scale, int ldm)
{
	static const char op[] = "layer_norm_modulate";
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);
	int rows = b * tokens;

	if (rows <= 0 || dim <= 0)
		return;
	k_layer_norm_modulate<<<(unsigned)((rows + 7) / 8), THREADS, 0, s->stream>>>(y, x, rows,
	    tokens, dim, eps, shift, scale, ldm);
	done(s, op);
}

static void
cuda_gated_add(struct sd_ctx *c, float *x, const float *gate, int ldg, const float *y,
    int b, int tokens, int dim)
{
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);
	size_t n = (size_t)b * tokens * dim;

	if (n == 0)
		return;
	k_gated_add<<<nblocks(n, THREADS), THREADS, 0, s->stream>>>(x, gate, ldg, y,
	    (size_t)tokens, (size_t)dim, n);
	done(s, "gated_add");
}

static void
cuda_unpatchify(struct sd_ctx *c, float *y, const float *x, int b, int ch, int h, int w, int p)
{
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);
	size_t n = (size_t)b * ch * h * w;

	if (n == 0 || p <= 0)
		return;
	k_unpatchify<<<nblocks(n, THREADS), THREADS, 0, s->stream>>>(y, x, b, ch, h, w, p);
	done(s, "unpatchify");
}

static void
cuda_mul(struct sd_ctx *c, float *y, const float *a, const float *b, size_t n)
{
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);

	if (n == 0)
		return;
	k_mul<<<nblocks(n, THREADS), THREADS, 0, s->stream>>>(y, a, b, n);
	done(s, "mul");
}

static void
cuda_unary(struct sd_ctx *c, float *x, size_t n, int kind)
{
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);
	const char *op = kind == SD_UNARY_SILU ? "silu" : kind == SD_UNARY_GELU ? "gelu" :
	    kind == SD_UNARY_GELU_TANH ? "gelu_tanh" : "quick_gelu";

	if (n == 0)
		return;
	k_unary<<<nblocks(n, THREADS), THREADS, 0, s->stream>>>(x, n, kind);
	done(s, op);
}

static void
cuda_geglu(struct sd_ctx *c, float *y, const float *p, int rows, int d)
{
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);
	size_t total = (size_t)rows * d;

	if (rows <= 0 || d <= 0)
		return;
	k_geglu<<<nblocks(total, THREADS), THREADS, 0, s->stream>>>(y, p, (size_t)rows, d);
	done(s, "geglu");
}

static void
cuda_add(struct sd_ctx *c, float *y, const float *a, const float *b, size_t n)
{
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);

	if (n == 0)
		return;
	k_add<<<nblocks(n, THREADS), THREADS, 0, s->stream>>>(y, a, b, n);
	done(s, "add");
}

static void
cuda_lerp(struct sd_ctx *c, float *y, const float *a, const float *b, float t, size_t n)
{
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);

	if (n == 0)
		return;
	k_lerp<<<nblocks(n, THREADS), THREADS, 0, s->stream>>>(y, a, b, t, n);
	done(s, "lerp");
}

static void
cuda_scale(struct sd_ctx *c, float *x, float t, size_t n)
{
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);

	if (n == 0)
		return;
	k_scale<<<nblocks(n, THREADS), THREADS, 0, s->stream>>>(x, t, n);
	done(s, "scale");
}

static void
cuda_add_channel(struct sd_ctx *c, float *x, const float *v, int n, int ch, int hw)
{
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);
	size_t rows = (size_t)n * ch;

	if (rows == 0 || hw <= 0)
		return;
	dim3 grid(nblocks((size_t)hw, THREADS) < 64 ? nblocks((size_t)hw, THREADS) : 64,
	    cap_grid(rows, 65535));
	k_add_rows<<<grid, THREADS, 0, s->stream>>>(x, v, rows, rows, (size_t)hw);
	done(s, "add_channel");
}

static void
cuda_upsample2x(struct sd_ctx *c, float *y, const float *x, int n, int ch, int h, int w)
{
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);
	size_t planes = (size_t)n * ch, total = planes * 4 * (size_t)h * w;

	if (total == 0)
		return;
	k_upsample2x<<<nblocks(total, THREADS), THREADS, 0, s->stream>>>(y, x, planes, h, w);
	done(s, "upsample2x");
}

static void
cuda_concat(struct sd_ctx *c, float *y, const float *a, int ca, const float *b, int cb, int n, int hw)
{
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);
	size_t total = (size_t)n * (ca + cb) * hw;

	if (total == 0)
		return;
	k_concat<<<nblocks(total, THREADS), THREADS, 0, s->stream>>>(y, a, (size_t)ca, b, (size_t)cb,
	    (size_t)n, (size_t)hw);
	done(s, "concat");
}

static void
cuda_transpose(struct sd_ctx *c, float *y, const float *x, int n, int rows, int cols)
{
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);

	if (n <= 0 || rows <= 0 || cols <= 0)
		return;
	dim3 grid((unsigned)((cols + 31) / 32), cap_grid((size_t)(rows + 31) / 32, 65535),
	    cap_grid((size_t)n, 65535));
	k_transpose<<<grid, dim3(32, 8), 0, s->stream>>>(y, x, n, rows, cols);
	done(s, "transpose");
}

static void
cuda_embed(struct sd_ctx *c, float *y, const int *ids, int count,
    const struct sd_tensor *table, const struct sd_tensor *pos, int npos)
{
	static const char op[] = "embed";
	struct cuda_state *s = (struct cuda_state *)c->state;
	PROF_BEGIN(s);
	size_t dim = (size_t)table->shape[1], total = (size_t)count * dim;

	if (count <= 0 || dim == 0)
		return;
	const float *T = dev_f32(s, table, op), *P = pos != NULL ? dev_f32(s, pos, op) : NULL;
	int *d = (int *)grow(s, &s->ids, (size_t)count * sizeof *d, op, "the token ids");
	ck(cudaMemcpyAsync(d, ids, (size_t)count * sizeof *d, cudaMemcpyHostToDevice, s->stream), op);
	k_embed<<<nblocks(total, THREADS), THREADS, 0, s->stream>>>(y, d, (size_t)count, dim, T,
	    (int)table->shape[0], P, npos > 0 ? npos : 1);
	done(s, op);
}

extern "C" const struct sd_backend sd_backend_cuda = {
	.name = "cuda",
	.init = cuda_init,
	.fini = cuda_fini,
	.describe = cuda_describe,
	.device_memory = cuda_device_memory,
	.take_error = cuda_take_error,
	.mem_alloc = cuda_mem_alloc,
	.mem_free = cuda_mem_free,
	.upload = cuda_upload,
	.download = cuda_download,
	.conv2d = cuda_conv2d,
	.linear = cuda_linear,
	.group_norm = cuda_group_norm,
	.layer_norm = cuda_layer_norm,
	.attention = cuda_attention,
	.rms_norm = cuda_rms_norm,
	.layer_norm_modulate = cuda_layer_norm_modulate,
	.gated_add = cuda_gated_add,
	.unpatchify = cuda_unpatchify,
	.mul = cuda_mul,
	.unary = cuda_unary,
	.geglu = cuda_geglu,
	.add = cuda_add,
	.lerp = cuda_lerp,
	.scale = cuda_scale,
	.add_channel = cuda_add_channel,
	.upsample2x = cuda_upsample2x,
	.concat = cuda_concat,
	.transpose = cuda_transpose,
	.embed = cuda_embed,
	.copy = cuda_copy,
};
