## bench.mk: `make bench` times SD 1.5 at 256x256 and 512x512 on the
## random-weight checkpoint that `sdbatch bench` generates once (2.1 GB in
## $XDG_CACHE_HOME/sdbatch or ~/.cache/sdbatch).  BENCH_FLAGS adds options
## (e.g. BENCH_FLAGS="--threads 4 --steps 2").
BENCH_FLAGS =
bench: src/sdbatch$(EXEEXT)
	$(AM_V_at)$(abs_top_builddir)/src/sdbatch$(EXEEXT) bench --size 256 $(BENCH_FLAGS)
	$(AM_V_at)$(abs_top_builddir)/src/sdbatch$(EXEEXT) bench --size 512 $(BENCH_FLAGS)
## `make bench-lora`: the time to merge a random rank-8 LoRA into that
## checkpoint (issue 21: under 2 s on 2 cores).
bench-lora: src/sdbatch$(EXEEXT)
	$(AM_V_at)$(abs_top_builddir)/src/sdbatch$(EXEEXT) bench --lora-rank 8 $(BENCH_FLAGS)
.PHONY: bench bench-lora
