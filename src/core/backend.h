/* backend.h: what a compute backend provides (see ops.h for the meaning of
 * each operation; the op_* functions forward to these). */
#ifndef SD_BACKEND_H
#define SD_BACKEND_H

#include "core/ops.h"

struct sd_backend {
	const char *name;
	/* Set up c->state for device index `device`; 0 or -1 with err. */
	int (*init)(struct sd_ctx *c, int device, struct sd_error *err);
	void (*fini)(struct sd_ctx *c);
	const char *(*describe)(const struct sd_ctx *c);
	/* Optional (NULL on the CPU): see sd_ctx_device_memory. */
	void (*device_memory)(const struct sd_ctx *c, size_t *peak, size_t *base);
	/* Optional: move an error met inside the last op (out of scratch
	 * memory, a device error) into *status unless it holds one already,
	 * and forget it. */
	void (*take_error)(struct sd_ctx *c, struct sd_error *status);

	/* Backend memory for the arena's chunks (NULL when out of memory). */
	void *(*mem_alloc)(struct sd_ctx *c, size_t bytes);
	void (*mem_free)(struct sd_ctx *c, void *p);
	void (*upload)(struct sd_ctx *c, float *dst, const float *host, size_t n);
	void (*download)(struct sd_ctx *c, float *host, const float *src, size_t n);

	void (*conv2d)(struct sd_ctx *c, float *y, const float *x, int n, int cin, int h, int w,
	    const struct sd_tensor *weight, const struct sd_tensor *bias, int stride,
	    int pt, int pl, int pb, int pr);
	void (*linear)(struct sd_ctx *c, float *y, const float *x, int m, int k,
	    const struct sd_tensor *weight, const struct sd_tensor *bias);
	void (*group_norm)(struct sd_ctx *c, float *y, const float *x, int n, int ch, int hw,
	    int groups, float eps, const struct sd_tensor *gamma, const struct sd_tensor *beta,
	    int silu);
	void (*layer_norm)(struct sd_ctx *c, float *y, const float *x, int rows, int dim,
	    float eps, const struct sd_tensor *gamma, const struct sd_tensor *beta);
	/* bias: NULL, or [heads, lq, lk] added to the scores (never with
	 * causal; see op_attention_bias) */
	void (*attention)(struct sd_ctx *c, float *out, const float *q, int ldq,
	    const float *k, int ldk, const float *v, int ldv,
	    int b, int lq, int lk, int heads, int dh, float scale, int causal,
	    const float *bias);
	void (*rms_norm)(struct sd_ctx *c, float *y, const float *x, int rows, int dim,
	    float eps, const struct sd_tensor *weight);
	void (*layer_norm_modulate)(struct sd_ctx *c, float *y, const float *x, int b,
	    int tokens, int dim, float eps, const float *shift, const float *scale, int ldm);
	void (*gated_add)(struct sd_ctx *c, float *x, const float *gate, int ldg, const float *y,
	    int b, int tokens, int dim);
	void (*unpatchify)(struct sd_ctx *c, float *y, const float *x, int b, int ch, int h,
	    int w, int p);
	void (*mul)(struct sd_ctx *c, float *y, const float *a, const float *b, size_t n);
	void (*unary)(struct sd_ctx *c, float *x, size_t n, int kind);
	void (*geglu)(struct sd_ctx *c, float *y, const float *p, int rows, int d);
	void (*add)(struct sd_ctx *c, float *y, const float *a, const float *b, size_t n);
	void (*lerp)(struct sd_ctx *c, float *y, const float *a, const float *b, float s, size_t n);
	void (*scale)(struct sd_ctx *c, float *x, float s, size_t n);
	void (*add_channel)(struct sd_ctx *c, float *x, const float *v, int n, int ch, int hw);
	void (*upsample2x)(struct sd_ctx *c, float *y, const float *x, int n, int ch, int h, int w);
	void (*concat)(struct sd_ctx *c, float *y, const float *a, int ca, const float *b, int cb,
	    int n, int hw);
	void (*transpose)(struct sd_ctx *c, float *y, const float *x, int n, int rows, int cols);
	void (*embed)(struct sd_ctx *c, float *y, const int *ids, int count,
	    const struct sd_tensor *table, const struct sd_tensor *pos, int npos);
	void (*copy)(struct sd_ctx *c, float *y, const float *x, size_t n);
};

enum { SD_UNARY_SILU, SD_UNARY_GELU, SD_UNARY_QUICK_GELU, SD_UNARY_GELU_TANH };

extern const struct sd_backend sd_backend_cpu;
#ifdef HAVE_CUDA
extern const struct sd_backend sd_backend_cuda;
#endif

#endif
