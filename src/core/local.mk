## src/core: tensors, errors, ops, backends
src_libsdbatch_a_SOURCES += src/core/error.c src/core/error.h \
	src/core/tensor.c src/core/tensor.h \
	src/core/ops.c src/core/ops.h src/core/backend.h \
	src/core/backend_cpu.c
