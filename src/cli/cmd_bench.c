/* cmd_bench.c: `sdbatch bench`: speed and memory of the engine on SD 1.5.
 *
 * Without --model it times a deterministic full-size random-weight SD 1.5
 * checkpoint (F16, the original single-file layout) that it generates once
 * into the cache folder, so that timing needs no download.  It runs the
 * models directly (fixed token ids: no tokenizer files needed): the text
 * encoder on 2 prompts, sampling steps with classifier-free guidance (one
 * UNet forward on a batch of 2, the guidance blend, an Euler update), and
 * one VAE decode. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/cli.h"
#include "core/blas.h"
#include "core/cpu.h"
#include "core/ops.h"
#include "model/checkpoint.h"
#include "model/clip.h"
#include "model/lora.h"
#include "model/spm.h"
#include "model/synth.h"
#include "model/t5.h"
#include "model/vae.h"
#include "sample/conditioner.h"
#include "sample/denoiser.h"
#include "sample/description.h"
#include "sample/pipeline.h"

enum { OPT_JSON = OPT_COMMON_END, OPT_SIZE, OPT_STEPS, OPT_CACHE, OPT_PEAK, OPT_ARCH, OPT_SAMPLER,
	OPT_LORA, OPT_LORA_RANK };

static void
bench_usage(FILE *out)
{
	fputs("Usage: sdbatch bench [--model FILE | --arch ARCH] [--size N] [--steps N]\n"
	    "                     [--sampler NAME] [--threads N] [--json]\n"
	    "       sdbatch bench [--model FILE | --arch ARCH] --lora FILE | --lora-rank N\n"
	    "                     [--steps N] [--threads N] [--json]\n"
	    "\n"
	    "Measure the speed and memory of rendering: text encoder time, seconds\n"
	    "per sampling step with classifier-free guidance (median), VAE decode time,\n"
	    "peak resident memory, the GFLOP/s the UNet and VAE reach, the BLAS in use\n"
	    "with its kernel, and the sgemm speed it measures first.\n"
	    "\n"
	    "Without --model it uses a deterministic random-weight checkpoint of ARCH with\n"
	    "the real names and shapes (SD 1.5: F16, 2.1 GB; SD 2.1: 2.6 GB), generated\n"
	    "once into the cache folder ($XDG_CACHE_HOME/sdbatch, else ~/.cache/sdbatch),\n"
	    "so timing needs no download.\n"
	    "\n"
	    "      --model FILE    a checkpoint to time instead (tokenizer files not needed)\n"
	    "      --arch ARCH     the random checkpoint: sd15 (default), sd2 (2.1 768-v),\n"
	    "                      sdxl (base 1.0, 6.9 GB), sd3 (SD3 Medium with T5-XXL,\n"
	    "                      15.5 GB)\n"
	    "      --size N        image width and height in pixels, a multiple of 8\n"
	    "                      (default: the model's, 512 for SD 1.5, 768 for SD 2.1)\n"
	    "      --sampler NAME  the sampler of the \"image\" estimate (default: the model's):\n"
	    "                      heun, dpm2 and dpm2_a evaluate the UNet twice a step\n"
	    "      --steps N       timed sampling steps (default 4), after one warm-up step\n"
	    "      --threads N     CPU threads (default: one per physical core)\n"
	    "      --device DEV    cpu, cuda or cuda:N\n"
	    "      --cache DIR     where the generated checkpoint lives\n"
	    "      --sgemm-size N  the square sgemm measured first (default 2048; 0: skip)\n"
	    "      --lora FILE     time merging this LoRA into the model instead (opening\n"
	    "                      the file and merging; --steps merges, default 4)\n"
	    "      --lora-rank N   the same with a random LoRA of rank N made for the model\n"
	    "                      (its UNet transformers' and text encoders' linear layers)\n"
	    "      --json          also print one JSON object as the last line of stdout\n"
	    "  -q, --quiet         no messages but errors and the results (with\n"
	    "                      --json, the JSON line alone)\n"
	    "  -v, --verbose       more messages\n"
	    "  -h, --help          this help\n", out);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double
peak_rss_mb(void)
{
	struct rusage ru;
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	double kb = -1;

	if (f != NULL) {
		while (fgets(line, sizeof line, f) != NULL)
			if (strncmp(line, "VmHWM:", 6) == 0)
				kb = strtod(line + 6, NULL);
		fclose(f);
	}
	if (kb < 0 && getrusage(RUSAGE_SELF, &ru) == 0)
		kb = (double)ru.ru_maxrss;
	return kb / 1024.0;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* mkdir -p for the cache folder. */
static int
make_dirs(const char *path, struct sd_error *err)
{
	char buf[4096];
	size_t n = strlen(path);

	if (n >= sizeof buf)
		return sd_fail(err, SD_EIO, "%s: path too long", path);
	memcpy(buf, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		char c = buf[i];
		buf[i] = '\0';
		if (mkdir(buf, 0777) != 0 && errno != EEXIST)
			return sd_fail(err, SD_EIO, "%s: %s", buf, strerror(errno));
		buf[i] = c;
	}
	return 0;
}

/* The cached random checkpoint, generated when missing. */
static int
cached_model(const char *cache, const char *arch, char *path, size_t size, int quiet,
    struct sd_error *err)
{
	struct synth_config cfg;
	char dir[4096];
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	struct stat st;
	double t;

	if (cache != NULL)
		snprintf(dir, sizeof dir, "%s", cache);
	else if (xdg != NULL && *xdg == '/')
		snprintf(dir, sizeof dir, "%s/sdbatch", xdg);
	else if (home != NULL && *home != '\0')
		snprintf(dir, sizeof dir, "%s/.cache/sdbatch", home);
	else
		return sd_fail(err, SD_ECONFIG, "no cache folder: set HOME or XDG_CACHE_HOME, or give "
		    "--cache DIR or --model FILE");
	if (synth_preset(arch, 1, &cfg) < 0)
		return sd_fail(err, SD_EUSAGE, "--arch: sd15, sd2, sdxl or sd3, not \"%s\"", arch);
	if ((size_t)snprintf(path, size, "%s/%s-random-f16.safetensors", dir, arch) >= size)
		return sd_fail(err, SD_EIO, "%s: path too long", dir);
	if (stat(path, &st) == 0)
		return 0;
	if (make_dirs(dir, err) < 0)
		return -1;
	if (!quiet)
		fprintf(stderr, "sdbatch bench: generating a random-weight %s checkpoint (F16, "
		    "2-16 GB, once) into %s ...\n", arch, path);
	t = now();
	if (synth_checkpoint(path, &cfg, err) < 0)
		return -1;
	if (!quiet)
		fprintf(stderr, "sdbatch bench: generated in %.0f s\n", now() - t);
	return 0;
}

/* Deterministic pseudo-random floats in [-1, 1). */
static void
fill_random(float *x, size_t n, uint64_t seed)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;

	for (size_t i = 0; i < n; i++) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		x[i] = (float)((double)(s >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
	}
}

static double
cpu_seconds(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
	    (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static double
rss_mb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	double kb = 0;

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof line, f) != NULL)
		if (strncmp(line, "VmRSS:", 6) == 0)
			kb = strtod(line + 6, NULL);
	fclose(f);
	return kb / 1024.0;
}

/* --lora / --lora-rank: open the LoRA and merge it into the loaded model,
 * runs times (each undone), wall and CPU seconds of each. */
static int
bench_lora(struct sd_checkpoint *ck, const struct model_desc *desc, const char *file, int rank,
    int runs, const char *model, int threads, double load_s, int json, int quiet,
    struct sd_error *err)
{
	struct lora_model lm = {.unet_prefix = desc->unet_prefix, .ntext = desc->ntext};
	char tmp[4096] = "", info[64];
	double *wall = calloc((size_t)runs, sizeof *wall), *cpu = calloc((size_t)runs, sizeof *cpu);
	double rss_add = 0, t;
	size_t bytes = 0;
	int ntensors = 0, nlayers = 0, rc = -1;

	for (int i = 0; i < desc->ntext && i < 2; i++)
		lm.text_prefix[i] = desc->text[i].prefix;
	if (wall == NULL || cpu == NULL) {
		sd_fail(err, SD_EINTERNAL, "out of memory");
		goto out;
	}
	if (file == NULL) {
		const char *dir = getenv("TMPDIR");
		int fd;
		snprintf(tmp, sizeof tmp, "%s/sdbatch-bench-lora-XXXXXX", dir && *dir ? dir : "/tmp");
		if ((fd = mkstemp(tmp)) < 0) {
			sd_fail(err, SD_EIO, "%s: %s", tmp, strerror(errno));
			tmp[0] = '\0';
			goto out;
		}
		close(fd);
		t = now();
		if (lora_make_random(ck->weights, &lm, rank, tmp, NULL, err) < 0)
			goto out;
		if (!quiet)
			fprintf(stderr, "sdbatch bench: made a random rank-%d LoRA in %.1f s\n", rank,
			    now() - t);
		file = tmp;
	}
	for (int i = 0; i < runs; i++) {
		struct lora_report rep = {0};
		struct lora_use use = {0};
		struct lora_merge *mg;
		struct lora *l;
		double r0 = rss_mb(), c0 = cpu_seconds();
		t = now();
		if ((l = lora_open(file, err)) == NULL)
			goto out;
		use.lora = l;
		use.scale = use.unet_scale = 1.0f;
		mg = lora_merge_apply(ck->weights, &lm, &use, 1, &rep, err);
		wall[i] = now() - t;
		cpu[i] = cpu_seconds() - c0;
		if (mg == NULL) {
			lora_free(l);
			goto out;
		}
		if (i == 0) {
			rss_add = rss_mb() - r0;
			ntensors = lora_merge_tensors(mg);
			bytes = lora_merge_bytes(mg);
			nlayers = rep.applied;
			snprintf(info, sizeof info, "%s, rank %d to %d", lora_format_name(l->format),
			    l->min_rank, l->max_rank);
		}
		lora_merge_undo(mg, ck->weights);
		lora_free(l);
	}
	{
		double *sorted = malloc((size_t)runs * sizeof *sorted), best = wall[0], median;
		int bi = 0;
		if (sorted == NULL) {
			sd_fail(err, SD_EINTERNAL, "out of memory");
			goto out;
		}
		memcpy(sorted, wall, (size_t)runs * sizeof *sorted);
		qsort(sorted, (size_t)runs, sizeof *sorted, cmp_double);
		median = sorted[runs / 2];
		free(sorted);
		for (int i = 1; i < runs; i++)
			if (wall[i] < best)
				best = wall[i], bi = i;
		if (!quiet || !json) {
			printf("model:          %s (loaded in %.2f s), %d threads\n", model, load_s, threads);
			printf("LoRA:           %s (%s, %d layers applied)\n", tmp[0] ? "random" : file,
			    info, nlayers);
			printf("LoRA merge:     best %.3f s (CPU %.3f s), median %.3f s of %d; %d tensors, "
			    "%.0f MiB merged; RSS +%.0f MiB\n", best, cpu[bi], median, runs, ntensors,
			    (double)bytes / (1 << 20), rss_add);
			printf("merges:        ");
			for (int i = 0; i < runs; i++)
				printf(" %.3f s (CPU %.3f)", wall[i], cpu[i]);
			printf("\n");
		}
		if (json) {
			json_t *o = json_object(), *a = json_array();
			char *js;
			for (int i = 0; i < runs; i++)
				json_array_append_new(a, json_real(wall[i]));
			json_object_set_new(o, "model", json_string(model));
			json_object_set_new(o, "threads", json_integer(threads));
			json_object_set_new(o, "lora", json_string(tmp[0] ? "random" : file));
			json_object_set_new(o, "lora_layers", json_integer(nlayers));
			json_object_set_new(o, "lora_merge_s", json_real(best));
			json_object_set_new(o, "lora_merge_cpu_s", json_real(cpu[bi]));
			json_object_set_new(o, "lora_merge_median_s", json_real(median));
			json_object_set_new(o, "lora_merges_s", a);
			json_object_set_new(o, "lora_merged_tensors", json_integer(ntensors));
			json_object_set_new(o, "lora_merged_mb", json_real((double)bytes / (1 << 20)));
			json_object_set_new(o, "lora_rss_mb", json_real(rss_add));
			if ((js = json_dumps(o, JSON_COMPACT)) != NULL)
				puts(js);
			free(js);
			json_decref(o);
		}
	}
	rc = 0;
out:
	if (tmp[0] != '\0')
		unlink(tmp);
	free(wall);
	free(cpu);
	return rc;
}

/* The "image" figure: text encoder, this many steps, VAE decode. */
#define IMAGE_STEPS 20

struct results {
	double sgemm_peak, text_encoder_s, unet_first_s, unet_step_s, vae_decode_s;
	double unet_context_s;	/* the cross-attentions' keys and values, once an image */
	double unet_step_flops, vae_flops, peak_rss_mb, load_s;
	double rss_after_text, rss_after_unet;
	size_t gpu_peak, gpu_base;
	int size, steps, threads, gpu;
};

int
cmd_bench(int argc, char **argv)
{
	static const struct option longopts[] = {
		CLI_COMMON_OPTIONS,
		{"json", no_argument, NULL, OPT_JSON},
		{"size", required_argument, NULL, OPT_SIZE},
		{"steps", required_argument, NULL, OPT_STEPS},
		{"cache", required_argument, NULL, OPT_CACHE},
		{"sgemm-size", required_argument, NULL, OPT_PEAK},
		{"arch", required_argument, NULL, OPT_ARCH},
		{"sampler", required_argument, NULL, OPT_SAMPLER},
		{"lora", required_argument, NULL, OPT_LORA},
		{"lora-rank", required_argument, NULL, OPT_LORA_RANK},
		{NULL, 0, NULL, 0},
	};
	struct sd_error err = {0};
	struct sd_checkpoint ck = {0};
	struct model_desc desc;
	struct sd_ctx *c = NULL;
	struct clip_text *enc[MODEL_MAX_TEXT] = {0}, *clip = NULL;
	struct t5_encoder *t5 = NULL;
	float pooled[2 * 4096], time_ids[12];
	struct conditioning cond = {0};
	int width = 0, pooled_dim = 0, t5_len = 0;
	struct denoiser *u = NULL;
	struct vae *v = NULL;
	struct results r = {0};
	const char *model = NULL, *cache = NULL, *device = NULL, *arch = "sd15", *lora = NULL;
	int lora_rank = 0;
	char path[4096], blas[160];
	long long val;
	int json = 0, quiet = 0, verbose = 0, threads = 0, peak_n = 2048, ch, rc = SD_EINTERNAL;
	double *times = NULL, t, f0;
	float *host = NULL;
	enum sd_sampler sampler = SD_SAMPLER_AUTO;	/* the model's */
	enum sd_schedule schedule = SD_SCHEDULE_NORMAL;
	int calls;

	r.size = 0;	/* the model's */
	r.steps = 4;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "hqv", longopts, NULL)) != -1) {
		switch (ch) {
		case OPT_MODEL:
			model = optarg;
			break;
		case OPT_THREADS:
			if (cli_int("bench", "--threads", optarg, 0, 1024, &val) != 0)
				return SD_EUSAGE;
			threads = (int)val;
			break;
		case OPT_DEVICE:
			if (!config_device_valid(optarg)) {
				fprintf(stderr, "sdbatch bench: --device: \"%s\" is not "
				    "cpu, cuda or cuda:N\n", optarg);
				return SD_EUSAGE;
			}
			device = optarg;
			break;
		case OPT_SIZE:
			if (cli_int("bench", "--size", optarg, 64, 4096, &val) != 0)
				return SD_EUSAGE;
			if (val % 8 != 0) {
				cli_error("bench", "--size: %lld is not a multiple of 8", val);
				return SD_EUSAGE;
			}
			r.size = (int)val;
			break;
		case OPT_STEPS:
			if (cli_int("bench", "--steps", optarg, 1, 1000, &val) != 0)
				return SD_EUSAGE;
			r.steps = (int)val;
			break;
		case OPT_PEAK:
			if (cli_int("bench", "--sgemm-size", optarg, 0, 16384, &val) != 0)
				return SD_EUSAGE;
			peak_n = (int)val;
			break;
		case OPT_CACHE:
			cache = optarg;
			break;
		case OPT_SAMPLER:
			if (sd_sampler_parse_full(optarg, &sampler, &schedule) < 0) {
				cli_error("bench", "--sampler: unknown sampler \"%s\" (see "
				    "sdbatch run --list-samplers)", optarg);
				return SD_EUSAGE;
			}
			break;
		case OPT_ARCH:
			arch = optarg;
			break;
		case OPT_LORA:
			lora = optarg;
			break;
		case OPT_LORA_RANK:
			if (cli_int("bench", "--lora-rank", optarg, 1, 1024, &val) != 0)
				return SD_EUSAGE;
			lora_rank = (int)val;
			break;
		case OPT_JSON:
			json = 1;
			break;
		case 'q':
		case OPT_QUIET:
			quiet = 1;
			break;
		case 'v':
		case OPT_VERBOSE:
			verbose = 1;
			break;
		case 'h':
		case OPT_HELP:
			bench_usage(stdout);
			return 0;
		case OPT_CONFIG:
		case OPT_TOKENIZER:
		case OPT_PROGRESS:
			break;	/* accepted for symmetry; bench needs none */
		default:
			bench_usage(stderr);
			return SD_EUSAGE;
		}
	}
	if (optind != argc) {
		bench_usage(stderr);
		return SD_EUSAGE;
	}
	if (lora != NULL && lora_rank > 0) {
		cli_error("bench", "--lora and --lora-rank: one or the other");
		return SD_EUSAGE;
	}
	if (lora != NULL || lora_rank > 0)
		peak_n = 0;	/* no sgemm figure: the merge is timed */

	/* The model first: generating it takes a while, and the sgemm figure
	 * is better measured on a quiet machine. */
	if (model == NULL) {
		if (cached_model(cache, arch, path, sizeof path, quiet, &err) < 0)
			goto fail;
		model = path;
	}
	c = sd_ctx_new(device, threads, &err);
	if (c == NULL)
		goto fail;
	r.threads = c->threads;
	r.gpu = sd_ctx_device_memory(c, &r.gpu_peak, &r.gpu_base) == 0;
	if (r.gpu)
		peak_n = 0;	/* on a GPU the host's sgemm does not matter */
	blas_describe(blas, sizeof blas);
	if (peak_n > 0) {
		int was = blas_get_threads();
		blas_set_threads(r.threads);
		r.sgemm_peak = blas_sgemm_peak(peak_n, 3);
		blas_set_threads(was);
	}
	if (!quiet) {
		printf("device:         %s\n", sd_ctx_describe(c));
		printf("BLAS:           %s%s%s%s\n", blas, blas_kernel_note() ? " (" : "",
		    blas_kernel_note() ? blas_kernel_note() : "", blas_kernel_note() ? ")" : "");
		if (peak_n > 0)
			printf("sgemm peak:     %.1f GFLOP/s (%dx%d, %d threads)\n", r.sgemm_peak,
			    peak_n, peak_n, r.threads);
		printf("model:          %s\n", model);
		fflush(stdout);
	}

	t = now();
	if (checkpoint_load(&ck, model, NULL, NULL, &err) < 0 || model_describe(&ck, &desc, &err) < 0)
		goto fail;
	if (lora != NULL || lora_rank > 0) {
		rc = bench_lora(&ck, &desc, lora, lora_rank, r.steps, model, r.threads, now() - t,
		    json, quiet, &err) < 0 ? SD_EINTERNAL : 0;
		goto fail;
	}
	for (int e = 0; e < desc.ntext; e++) {
		if (desc.text[e].kind == TEXT_T5) {
			/* SD3's T5 (a file without it renders with zeros) */
			struct sd_error e2 = {0};
			if ((t5 = t5_load(ck.weights, desc.text[e].prefix, &desc.text[e].t5, &e2)) != NULL)
				t5_len = desc.text[e].max_len > 0 ? desc.text[e].max_len : SPM_T5_MAX_LEN;
			continue;
		}
		if ((enc[e] = clip_text_load(ck.weights, desc.text[e].prefix, &desc.text[e].clip, &err)) == NULL) {
			sd_error_prefix(&err, "%s", model);
			goto fail;
		}
		width += enc[e]->width;
		if (desc.text[e].pooled) {
			if (enc[e]->proj_dim <= 0 || pooled_dim + enc[e]->proj_dim > 4096) {
				sd_fail(&err, SD_EDATA, "%s: the pooled text embedding is %d wide", model,
				    pooled_dim + enc[e]->proj_dim);
				goto fail;
			}
			pooled_dim += enc[e]->proj_dim;
		}
	}
	clip = enc[0];
	if (desc.context_width > 0 && desc.family == MODEL_SD3)
		width = desc.context_width;	/* the CLIPs zero-padded to T5's width */
	if ((u = denoiser_load(&desc, ck.weights, &err)) == NULL ||
	    (v = vae_load(ck.weights, desc.vae_prefix, &err)) == NULL) {
		sd_error_prefix(&err, "%s", model);
		goto fail;
	}
	if (u->context_dim != width) {
		sd_fail(&err, SD_EDATA, "%s: the denoiser takes a %d-wide context, the text encoders "
		    "give %d", model, u->context_dim, width);
		goto fail;
	}
	r.load_s = now() - t;
	if (r.size == 0)
		r.size = desc.default_width;
	if (sampler == SD_SAMPLER_AUTO)
		sampler = desc.default_sampler;

	int lat = r.size / 8, zc = vae_latent_channels(v), clen = clip->max_len;
	/* SD3: the CLIP tokens, then T5's (or 77 of zeros) */
	int len = clen + (desc.family == MODEL_SD3 ? (t5 != NULL ? t5_len : clen) : 0);
	size_t nlat = (size_t)zc * lat * lat, nin = (size_t)u->in_channels * lat * lat;
	size_t nctx = 2 * (size_t)len * width, nimg = 3 * (size_t)r.size * r.size;
	int32_t *ids = calloc(2 * (size_t)(len > clen ? len : clen), sizeof *ids);
	float *ctx, *din, *dout, *dguided, *dz, *dimg, *latents;
	float ts[2];

	if (ids == NULL || u->out_channels != zc) {
		free(ids);
		sd_fail(&err, SD_EDATA, ids == NULL ? "out of memory" :
		    "the UNet's output is not the VAE's latent width");
		goto fail;
	}
	if (u->check_size(u->impl, lat, lat, &err) < 0)
		goto fail_ids;
	/* [BOS, a few words, EOS, EOS ...]: the negative prompt empty */
	for (int i = 0; i < clen; i++) {
		ids[i] = i == 0 ? 49406 : 49407;
		ids[clen + i] = i == 0 ? 49406 : i < 9 ? 320 + 37 * i : 49407;
	}
	for (int i = 0; i < 2 * clen; i++)
		if (ids[i] >= clip->vocab)
			ids[i] = ids[i] % clip->vocab;
	for (int b = 0; b < 2; b++) {	/* SDXL's time ids: the image's size */
		time_ids[6 * b] = time_ids[6 * b + 1] = time_ids[6 * b + 4] = time_ids[6 * b + 5] =
		    (float)r.size;
		time_ids[6 * b + 2] = time_ids[6 * b + 3] = 0.0f;
	}
	times = calloc((size_t)r.steps, sizeof *times);
	host = malloc((nin > nimg ? nin : nimg) * 2 * sizeof *host);
	latents = malloc(nlat * sizeof *latents);
	if (times == NULL || host == NULL || latents == NULL) {
		free(latents);
		sd_fail(&err, SD_EINTERNAL, "out of memory");
		goto fail_ids;
	}

	/* Text encoder: the first run touches the weights, the second is timed. */
	ctx = sd_alloc(c, nctx);
	for (int run = 0; run < 2; run++) {
		size_t mark = sd_mark(c);
		t = now();
		/* every encoder of the model; SDXL's and SD3's contexts side by
		 * side, and the pooled embedding(s) */
		float *part[MODEL_MAX_TEXT] = {0};
		float *dpooled[MODEL_MAX_TEXT] = {0};
		int off = 0, sd3 = desc.family == MODEL_SD3;
		for (int e = 0; e < desc.ntext; e++) {
			if (enc[e] == NULL)
				continue;
			part[e] = desc.ntext == 1 ? ctx : sd_alloc(c, 2 * (size_t)clen * enc[e]->width);
			if (desc.text[e].pooled)
				dpooled[e] = sd_alloc(c, 2 * (size_t)enc[e]->proj_dim);
			if (clip_text_forward_pooled(enc[e], c, ids, 2, 1, part[e], dpooled[e], &err) < 0)
				goto fail_lat;
		}
		if (desc.ntext == 2)
			op_concat(c, ctx, part[0], enc[0]->width, part[1], enc[1]->width, 2 * clen, 1);
		if (sd3 && host != NULL) {
			/* [CLIP-L | bigG | zeros] on 77 rows, then T5's rows */
			size_t nh = 2 * (size_t)len * width;
			float *hc = calloc(nh, sizeof *hc), *tmp = NULL;
			if (hc == NULL) {
				sd_fail(&err, SD_EINTERNAL, "out of memory");
				goto fail_lat;
			}
			for (int e = 0, col = 0; e < 2; col += enc[e]->width, e++) {
				size_t n = 2 * (size_t)clen * enc[e]->width;
				if ((tmp = malloc(n * sizeof *tmp)) == NULL)
					break;
				sd_download(c, tmp, part[e], n);
				for (int b = 0; b < 2; b++)
					for (int k = 0; k < clen; k++)
						memcpy(hc + ((size_t)b * len + k) * width + col,
						    tmp + ((size_t)b * clen + k) * enc[e]->width,
						    (size_t)enc[e]->width * sizeof *hc);
				free(tmp);
				tmp = NULL;
			}
			if (t5 != NULL) {
				int32_t *tid = calloc(2 * (size_t)t5_len, sizeof *tid);
				float *dt = sd_alloc(c, 2 * (size_t)t5_len * width);
				tmp = malloc(2 * (size_t)t5_len * width * sizeof *tmp);
				if (tid == NULL || tmp == NULL) {
					free(tid);
					free(tmp);
					free(hc);
					sd_fail(&err, SD_EINTERNAL, "out of memory");
					goto fail_lat;
				}
				for (int k = 0; k < 8 && k < t5_len; k++)	/* a few pieces, </s> */
					tid[t5_len + k] = k < 7 ? 100 + 13 * k : 1;
				tid[0] = 1;
				if (t5_forward(t5, c, tid, 2, t5_len, dt, &err) < 0) {
					free(tid);
					free(tmp);
					free(hc);
					goto fail_lat;
				}
				sd_download(c, tmp, dt, 2 * (size_t)t5_len * width);
				for (int b = 0; b < 2; b++)
					memcpy(hc + ((size_t)b * len + clen) * width,
					    tmp + (size_t)b * t5_len * width,
					    (size_t)t5_len * width * sizeof *hc);
				free(tid);
				free(tmp);
			}
			sd_upload(c, ctx, hc, nh);
			free(hc);
		}
		for (int e = 0; e < desc.ntext; e++) {
			if (dpooled[e] == NULL)
				continue;
			/* [b, P1 + P2]: each encoder's columns in turn */
			float tmpp[2 * 4096];
			sd_download(c, tmpp, dpooled[e], 2 * (size_t)enc[e]->proj_dim);
			for (int b = 0; b < 2; b++)
				memcpy(pooled + (size_t)b * pooled_dim + off, tmpp + (size_t)b * enc[e]->proj_dim,
				    (size_t)enc[e]->proj_dim * sizeof *pooled);
			off += enc[e]->proj_dim;
		}
		sd_download(c, host, ctx, 1);	/* waits for a GPU */
		r.text_encoder_s = now() - t;
		sd_release(c, mark);
	}
	r.rss_after_text = peak_rss_mb();
	/* Each phase keeps only its own weights resident. */
	sd_cpu_release_weights(c);

	/* Sampling: the context's keys and values (once an image, as
	 * sdbatch run does), one warm-up step, then the timed ones. */
	t = now();
	cond.context = ctx;
	cond.ctx_len = len;
	cond.pooled = pooled_dim > 0 ? pooled : NULL;
	cond.pooled_dim = pooled_dim;
	cond.time_ids = desc.time_ids ? time_ids : NULL;
	u->set_conditioning(u->impl, c, &cond, 2);
	sd_download(c, host, ctx, 1);	/* waits for a GPU */
	r.unet_context_s = now() - t;
	din = sd_alloc(c, 2 * nin);
	dout = sd_alloc(c, 2 * nlat);
	dguided = sd_alloc(c, nlat);
	fill_random(latents, nlat, 42);
	for (int i = 0; i <= r.steps; i++) {
		float sigma = 14.6f * (1.0f - (float)i / (float)(r.steps + 1)) + 0.03f;
		float scale_in = 1.0f / sqrtf(sigma * sigma + 1.0f);
		ts[0] = ts[1] = 999.0f * (1.0f - (float)i / (float)(r.steps + 1));
		for (int b = 0; b < 2; b++) {
			float *x = host + (size_t)b * nin;
			for (size_t k = 0; k < nlat; k++)
				x[k] = latents[k] * scale_in;
			for (size_t k = nlat; k < nin; k++)	/* inpainting channels */
				x[k] = 0.0f;
		}
		f0 = sd_ctx_flops(c);
		t = now();
		sd_upload(c, din, host, 2 * nin);
		if (u->forward(u->impl, c, dout, din, 2, lat, lat, ts, &cond, &err) < 0)
			goto fail_lat;
		op_lerp(c, dguided, dout, dout + nlat, 7.5f, nlat);
		sd_download(c, host, dguided, nlat);
		for (size_t k = 0; k < nlat; k++)	/* Euler to a smaller sigma */
			latents[k] -= 0.1f * host[k];
		t = now() - t;
		if (i == 0) {
			r.unet_first_s = t;
			r.unet_step_flops = sd_ctx_flops(c) - f0;
		} else {
			times[i - 1] = t;
		}
		if (!quiet && verbose)
			fprintf(stderr, "sdbatch bench: step %d%s: %.2f s\n", i, i == 0 ? " (warm-up)" : "", t);
	}
	qsort(times, (size_t)r.steps, sizeof *times, cmp_double);
	r.unet_step_s = r.steps % 2 ? times[r.steps / 2] :
	    0.5 * (times[r.steps / 2 - 1] + times[r.steps / 2]);
	r.rss_after_unet = peak_rss_mb();
	sd_cpu_release_weights(c);

	/* VAE decode of the latents (scaled as the pipeline does). */
	dz = sd_alloc(c, nlat);
	dimg = sd_alloc(c, nimg);
	for (size_t k = 0; k < nlat; k++)
		host[k] = latents[k] * 0.2f / desc.vae_scale;
	sd_upload(c, dz, host, nlat);
	if (r.gpu) {
		/* on a GPU, a warm-up decode uploads the weights first */
		vae_decode(v, c, dimg, dz, 1, lat, lat);
		sd_download(c, host, dimg, 1);
	}
	f0 = sd_ctx_flops(c);
	t = now();
	vae_decode(v, c, dimg, dz, 1, lat, lat);
	sd_download(c, host, dimg, 1);
	r.vae_decode_s = now() - t;
	r.vae_flops = sd_ctx_flops(c) - f0;
	r.peak_rss_mb = peak_rss_mb();
	if (r.gpu)
		sd_ctx_device_memory(c, &r.gpu_peak, &r.gpu_base);

	{
		double ug = r.unet_step_flops > 0 ? r.unet_step_flops / r.unet_step_s / 1e9 : 0;
		double vg = r.vae_flops > 0 ? r.vae_flops / r.vae_decode_s / 1e9 : 0;
		/* one image of IMAGE_STEPS steps from the parts measured: each
		 * step one UNet call, two for heun and dpm2 (but the last) */
		double image_s;

		calls = sd_sampler_model_calls(sampler, IMAGE_STEPS);
		image_s = r.text_encoder_s + r.unet_context_s + calls * r.unet_step_s +
		    r.vae_decode_s;

		/* -q: the results alone (with --json, the JSON line alone) */
		if (!quiet || !json) {
			printf("size:           %dx%d (latents %dx%d), batch 2 (CFG)", r.size, r.size,
			    lat, lat);
			if (!r.gpu)
				printf(", %d threads", r.threads);
			printf("\n");
			printf("load:           %.2f s\n", r.load_s);
			printf("text encoder:   %.3f s (2 prompts); the denoiser's context set-up "
			    "%.3f s\n", r.text_encoder_s, r.unet_context_s);
			printf("%s step:%*s%.*f s median of %d (CFG: 1 forward of batch 2",
			    desc.family == MODEL_SD3 ? "MMDiT" : "UNet", desc.family == MODEL_SD3 ? 5 : 6, "",
			    r.unet_step_s < 1 ? 4 : 2, r.unet_step_s, r.steps);
			if (r.unet_step_flops > 0)
				printf(", %.2f TFLOP, %.1f GFLOP/s", r.unet_step_flops / 1e12, ug);
			printf("); warm-up step %.2f s\n", r.unet_first_s);
			printf("VAE decode:     %.*f s", r.vae_decode_s < 1 ? 4 : 2, r.vae_decode_s);
			if (r.vae_flops > 0)
				printf(" (%.2f TFLOP, %.1f GFLOP/s)", r.vae_flops / 1e12, vg);
			printf("\n");
			printf("peak RSS:       %.0f MB (after text encoder %.0f, after sampling %.0f; "
			    "activations arena %.0f MB)\n", r.peak_rss_mb, r.rss_after_text,
			    r.rss_after_unet, (double)sd_arena_bytes(c) / (1 << 20));
			if (r.gpu)
				printf("peak GPU mem:   %.0f MiB (%.0f MiB of it in use once the device "
				    "was set up: CUDA context, cuBLAS)\n", (double)r.gpu_peak / (1 << 20),
				    (double)r.gpu_base / (1 << 20));
			printf("sampler:        %s: %d steps x %d UNet calls = %d calls\n",
			    sd_sampler_name(sampler), IMAGE_STEPS, calls > IMAGE_STEPS + 1 ? 2 : 1,
			    calls);
			printf("image:          %.*f s for text encoder + keys and values + %d UNet calls + "
			    "VAE decode (from the figures above): %.3g images/s\n", image_s < 10 ? 3 : 1,
			    image_s, calls, 1.0 / image_s);
		}
		if (json) {
			json_t *o = json_object();
			char *s;
			json_object_set_new(o, "size", json_integer(r.size));
			json_object_set_new(o, "steps", json_integer(r.steps));
			json_object_set_new(o, "threads", json_integer(r.threads));
			json_object_set_new(o, "device", json_string(sd_ctx_describe(c)));
			json_object_set_new(o, "model", json_string(model));
			json_object_set_new(o, "text_encoder_s", json_real(r.text_encoder_s));
			json_object_set_new(o, "unet_step_s", json_real(r.unet_step_s));
			json_object_set_new(o, "unet_first_step_s", json_real(r.unet_first_s));
			json_object_set_new(o, "unet_context_s", json_real(r.unet_context_s));
			json_object_set_new(o, "vae_decode_s", json_real(r.vae_decode_s));
			json_object_set_new(o, "peak_rss_mb", json_real(r.peak_rss_mb));
			json_object_set_new(o, "unet_step_tflop", json_real(r.unet_step_flops / 1e12));
			json_object_set_new(o, "vae_tflop", json_real(r.vae_flops / 1e12));
			json_object_set_new(o, "unet_gflops", json_real(ug));
			json_object_set_new(o, "vae_gflops", json_real(vg));
			json_object_set_new(o, "sgemm_peak_gflops", json_real(r.sgemm_peak));
			json_object_set_new(o, "sampler", json_string(sd_sampler_name(sampler)));
			json_object_set_new(o, "image_steps", json_integer(IMAGE_STEPS));
			json_object_set_new(o, "image_unet_calls", json_integer(calls));
			json_object_set_new(o, "image_s", json_real(image_s));
			json_object_set_new(o, "images_per_s", json_real(1.0 / image_s));
			if (r.gpu) {
				json_object_set_new(o, "gpu_peak_mb",
				    json_real((double)r.gpu_peak / (1 << 20)));
				json_object_set_new(o, "gpu_base_mb",
				    json_real((double)r.gpu_base / (1 << 20)));
			}
			json_object_set_new(o, "blas", json_string(blas_name()));
			json_object_set_new(o, "blas_kernel", json_string(blas_kernel()));
			if ((s = json_dumps(o, JSON_COMPACT)) != NULL)
				puts(s);
			free(s);
			json_decref(o);
		}
	}
	rc = 0;
fail_lat:
	free(latents);
fail_ids:
	free(ids);
fail:
	if (rc != 0)
		fprintf(stderr, "sdbatch bench: %s\n", err.message[0] ? err.message : "failed");
	if (rc != 0 && err.code != 0)
		rc = cli_status(&err);
	free(times);
	free(host);
	vae_free(v);
	denoiser_free(u);
	t5_free(t5);
	for (int e = 0; e < MODEL_MAX_TEXT; e++)
		clip_text_free(enc[e]);
	if (ck.weights != NULL)
		checkpoint_free(&ck);
	sd_ctx_free(c);
	return rc;
}
