/* cmd_make_model.c: `sdbatch make-model`: write a random-weight SD 1.5,
 * 2.x, XL or 3 checkpoint with the real layout, for trying sdbatch without a download
 * and for benchmarks.  Its images are noise: the weights are random. */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/error.h"
#include "model/synth.h"
#include "sample/description.h"

static void
make_model_usage(FILE *out)
{
	fputs("Usage: sdbatch make-model [--arch ARCH] [--tiny | --full] [--dtype f16|bf16|f32]\n"
	    "                          [--inpaint] [--no-t5] [--no-text-encoders] [--seed N] FILE\n"
	    "\n"
	    "Write a Stable Diffusion checkpoint with RANDOM weights to FILE, in the\n"
	    "original single-file layout with the real tensor names.  It exercises every\n"
	    "part of sdbatch without a download, but the images it gives are noise.\n"
	    "\n"
	    "  --arch ARCH     sd15 (default), sd2 (2.1 768-v), sd2-base, sd-turbo, sdxl,\n"
	    "                  sdxl-turbo, sd3 (SD3 Medium)\n"
	    "  --tiny          small widths (a few MB; renders in seconds) [default]\n"
	    "  --full          the real sizes (SD 1.5: 1.07 G parameters, ~2.1 GB in F16;\n"
	    "                  SD 2.x: 1.3 G parameters, ~2.6 GB; SDXL: 3.5 G, ~6.9 GB;\n"
	    "                  SD3 Medium: 7.7 G, ~15.5 GB, ~6 GB without T5)\n"
	    "  --dtype TYPE    f16 (default), bf16 or f32\n"
	    "  --inpaint       a 9-channel inpainting UNet\n"
	    "  --no-t5         SD3: without the T5 encoder (as sd3_medium_incl_clips)\n"
	    "  --no-text-encoders\n"
	    "                  SD3: the MMDiT and VAE alone (as sd3_medium.safetensors;\n"
	    "                  render with --text-encoders DIR)\n"
	    "  --seed N        weights seed (default 0)\n"
	    "  -h, --help      this help\n", out);
}

int
cmd_make_model(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"arch", required_argument, NULL, 'a'},
		{"tiny", no_argument, NULL, 't'},
		{"full", no_argument, NULL, 'f'},
		{"dtype", required_argument, NULL, 'd'},
		{"inpaint", no_argument, NULL, 'i'},
		{"seed", required_argument, NULL, 's'},
		{"no-t5", no_argument, NULL, '5'},
		{"no-text-encoders", no_argument, NULL, 'T'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct synth_config cfg = synth_config_sd15_tiny;
	struct synth_counts counts;
	struct model_desc desc;
	struct sd_error err = {0};
	enum sd_dtype dtype = SD_F16;
	int ch, full = 0, in = 4, drop = 0;
	const char *arch = "sd15";
	uint64_t seed = 0;
	char *end;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'a':
			if (synth_preset(optarg, 0, &cfg) < 0) {
				fprintf(stderr, "sdbatch make-model: --arch: sd15, sd2, sd2-base, sd-turbo, sdxl, sdxl-turbo "
				    "or sd3, not \"%s\"\n", optarg);
				return SD_EUSAGE;
			}
			arch = cfg.arch;
			break;
		case 't':
			full = 0;
			break;
		case 'f':
			full = 1;
			break;
		case 'd':
			if (strcmp(optarg, "f16") == 0 || strcmp(optarg, "F16") == 0)
				dtype = SD_F16;
			else if (strcmp(optarg, "bf16") == 0 || strcmp(optarg, "BF16") == 0)
				dtype = SD_BF16;
			else if (strcmp(optarg, "f32") == 0 || strcmp(optarg, "F32") == 0)
				dtype = SD_F32;
			else {
				fprintf(stderr, "sdbatch make-model: --dtype: f16, bf16 or f32, not \"%s\"\n", optarg);
				return SD_EUSAGE;
			}
			break;
		case 'i':
			in = 9;
			break;
		case '5':
			drop |= SYNTH_T5;
			break;
		case 'T':
			drop |= SYNTH_T5 | SYNTH_CLIP;
			break;
		case 's':
			seed = strtoull(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || *optarg == '-') {
				fprintf(stderr, "sdbatch make-model: --seed: not a number: %s\n", optarg);
				return SD_EUSAGE;
			}
			break;
		case 'h':
			make_model_usage(stdout);
			return 0;
		default:
			make_model_usage(stderr);
			return SD_EUSAGE;
		}
	}
	if (optind != argc - 1) {
		make_model_usage(stderr);
		return SD_EUSAGE;
	}
	synth_preset(arch, full, &cfg);
	if (drop && strcmp(arch, "sd3") != 0) {
		fprintf(stderr, "sdbatch make-model: --no-t5 and --no-text-encoders are for --arch sd3\n");
		return SD_EUSAGE;
	}
	if (in != 4 && strcmp(arch, "sd15") != 0) {
		fprintf(stderr, "sdbatch make-model: --inpaint is for --arch sd15\n");
		return SD_EUSAGE;
	}
	cfg.parts &= ~drop;
	if (strcmp(arch, "sd3") != 0)
		cfg.unet_in_channels = in;
	cfg.seed = seed;
	cfg.dtype = dtype;
	if (synth_count(&cfg, &counts, &err) < 0 ||
	    synth_checkpoint(argv[optind], &cfg, &err) < 0) {
		fprintf(stderr, "sdbatch make-model: %s\n", err.message);
		return err.code ? err.code : SD_EIO;
	}
	model_describe_arch(arch, &desc);
	fprintf(stderr, "sdbatch make-model: wrote %s: %s %s layout, %s, %lld parameters, "
	    "%.1f MB; RANDOM weights: its images are noise\n", argv[optind], full ? "full-size" : "tiny",
	    desc.name, sd_dtype_name(dtype), (long long)(counts.unet_params + counts.vae_params +
	    counts.clip_params + counts.t5_params), (double)counts.file_size / 1e6);
	return 0;
}
