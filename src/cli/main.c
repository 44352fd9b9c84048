/* main.c: the sdbatch command line: global options and subcommand dispatch. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "core/error.h"

static void
usage(FILE *out)
{
	fprintf(out,
	    "Usage: sdbatch [--help] [--version] COMMAND [OPTIONS] [ARGS]\n"
	    "\n"
	    "Render Stable Diffusion images from text prompts, one job at a time or as\n"
	    "a spool worker.\n"
	    "\n"
	    "Report bugs to: %s\n", PACKAGE_BUGREPORT);
}

int
main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return SD_EUSAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("sdbatch %s\n", PACKAGE_VERSION);
		return 0;
	}
	fprintf(stderr, "sdbatch: unknown command '%s'; try 'sdbatch --help'\n", argv[1]);
	return SD_EUSAGE;
}
