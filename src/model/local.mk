## src/model
src_libsdbatch_a_SOURCES += src/model/weights.c src/model/weights.h
