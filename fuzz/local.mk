## fuzz: libFuzzer targets, built with clang only by `make fuzz`.
##   make fuzz [FUZZ_SECONDS=60] [FUZZ_CC=clang]
## Needs clang's fuzzer runtime (Debian: libclang-rt-14-dev).  New inputs
## found go to fuzz/corpus-safetensors in the build folder; a crash leaves
## fuzz/crash-* there and fails the target.
FUZZ_CC = clang
FUZZ_SECONDS = 60
FUZZ_CFLAGS = -g -O1 -std=c11 -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=undefined -fno-omit-frame-pointer
fuzz_safetensors_srcs = $(top_srcdir)/fuzz/fuzz_safetensors.c \
	$(top_srcdir)/src/io/safetensors.c $(top_srcdir)/src/core/tensor.c \
	$(top_srcdir)/src/core/error.c $(top_srcdir)/src/io/fileio.c
EXTRA_DIST += fuzz/fuzz_safetensors.c fuzz/make-corpus.sh fuzz/safetensors.dict
CLEANFILES += fuzz/fuzz_safetensors

fuzz/fuzz_safetensors: $(fuzz_safetensors_srcs) $(top_srcdir)/src/io/safetensors.h \
    $(top_srcdir)/src/core/tensor.h $(top_srcdir)/src/core/error.h config.h
	@$(MKDIR_P) fuzz
	$(AM_V_CC)$(FUZZ_CC) $(FUZZ_CFLAGS) -I$(top_srcdir)/src -I$(top_builddir) \
	    $(JANSSON_CFLAGS) -o $@ $(fuzz_safetensors_srcs) $(JANSSON_LIBS) -lm

fuzz: fuzz/fuzz_safetensors
	@rm -rf fuzz/seeds-safetensors
	$(SHELL) $(top_srcdir)/fuzz/make-corpus.sh fuzz/seeds-safetensors
	@$(MKDIR_P) fuzz/corpus-safetensors
	cd fuzz && ./fuzz_safetensors -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	    -dict=$(abs_top_srcdir)/fuzz/safetensors.dict \
	    corpus-safetensors seeds-safetensors

clean-local: clean-fuzz
clean-fuzz:
	-rm -rf fuzz/seeds-safetensors fuzz/corpus-safetensors

.PHONY: fuzz clean-fuzz
