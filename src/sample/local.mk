## src/sample
src_libsdbatch_a_SOURCES += src/sample/rng.c src/sample/rng.h \
	src/sample/scheduler.c src/sample/scheduler.h src/sample/names.c
src_libsdbatch_a_SOURCES += src/sample/pipeline.c src/sample/pipeline.h
src_libsdbatch_a_SOURCES += src/sample/description.c src/sample/description.h \
	src/sample/conditioner.c src/sample/conditioner.h \
	src/sample/denoiser.c src/sample/denoiser.h
