## src/cli: the sdbatch command
SDBATCH_CLI_SOURCES = src/cli/main.c src/cli/cli.h src/cli/common.c \
	src/cli/progressbar.c src/cli/cmd_run.c src/cli/cmd_watch.c \
	src/cli/cmd_submit.c src/cli/cmd_status.c src/cli/cmd_cancel.c \
	src/cli/cmd_info.c src/cli/cmd_make_model.c
src_sdbatch_SOURCES += $(SDBATCH_CLI_SOURCES)
src_sdbatch_LDADD = $(LDADD)
src_sdbatch_SOURCES += src/cli/cmd_pull.c
## perf: `sdbatch bench`
src_sdbatch_SOURCES += src/cli/cmd_bench.c
## issue 15: `sdbatch retry`
src_sdbatch_SOURCES += src/cli/cmd_retry.c
