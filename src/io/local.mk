## src/io: file formats
src_libsdbatch_a_SOURCES += src/io/safetensors.c src/io/safetensors.h
src_libsdbatch_a_SOURCES += src/io/png.c src/io/png.h src/io/image.c src/io/image.h
src_libsdbatch_a_SOURCES += src/io/http.c src/io/http.h
src_libsdbatch_a_SOURCES += src/io/jpeg.c src/io/jpeg.h
src_libsdbatch_a_SOURCES += src/io/fileio.c src/io/fileio.h
src_libsdbatch_a_SOURCES += src/io/jsonerr.c src/io/jsonerr.h
