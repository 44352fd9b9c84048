## src/cli: the sdbatch command
src_sdbatch_SOURCES += src/cli/main.c
src_sdbatch_LDADD = $(LDADD)
