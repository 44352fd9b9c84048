## src/io: file formats
src_libsdbatch_a_SOURCES += src/io/safetensors.c src/io/safetensors.h
