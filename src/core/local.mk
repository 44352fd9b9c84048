## src/core: tensors, errors, ops, backends
src_libsdbatch_a_SOURCES += src/core/error.c src/core/error.h \
	src/core/tensor.c src/core/tensor.h \
	src/core/ops.c src/core/ops.h src/core/backend.h \
	src/core/backend_cpu.c

## The CUDA backend (configure --enable-cuda).  The .cu file is listed under a
## conditional so that it is in the tarball either way; nvcc compiles it with
## the suffix rule below.  -fno-exceptions and -fno-threadsafe-statics keep
## the object free of libstdc++ symbols, so that the C linker links it.
SUFFIXES = .cu
if HAVE_CUDA
src_libsdbatch_a_SOURCES += src/core/backend_cuda.cu
endif
EXTRA_DIST += tests/cuda-check.sh
SD_NVCC_FLAGS = -lineinfo -Xcompiler -Wall,-Wextra,-fno-exceptions,-fno-threadsafe-statics
.cu.o:
	$(AM_V_GEN)$(NVCC) $(NVCCFLAGS) $(SD_NVCC_FLAGS) $(DEFS) $(DEFAULT_INCLUDES) \
	    $(AM_CPPFLAGS) $(CPPFLAGS) $(CUDA_CFLAGS) -c -o $@ $<
src/core/backend_cuda.$(OBJEXT): $(srcdir)/src/core/backend.h $(srcdir)/src/core/ops.h \
	$(srcdir)/src/core/tensor.h $(srcdir)/src/core/error.h
## perf: BLAS/CPU detection and the CPU backend's vector kernels
src_libsdbatch_a_SOURCES += src/core/blas.c src/core/blas.h \
	src/core/cpu.h src/core/cpu_kernels.c src/core/cpu_kernels.h
## wino: Winograd transforms of the CPU backend's 3x3 convolutions
src_libsdbatch_a_SOURCES += src/core/cpu_winograd.c src/core/cpu_winograd.h
src_libsdbatch_a_SOURCES += src/core/cpu_smallgemm.c src/core/cpu_smallgemm.h \
	src/core/cpu_gemm.c src/core/cpu_gemm.h
## h18: fused AVX-512 attention of the CPU backend
src_libsdbatch_a_SOURCES += src/core/cpu_attention.c src/core/cpu_attention.h
