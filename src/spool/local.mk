## src/spool: job files, the spool, the worker, results and callbacks
src_libsdbatch_a_SOURCES += \
	src/spool/util.c src/spool/util.h \
	src/spool/yamltree.c src/spool/yamltree.h \
	src/spool/params.c src/spool/params.h \
	src/spool/conf.c src/spool/conf.h \
	src/spool/job.c src/spool/job.h \
	src/spool/modelpath.c src/spool/modelpath.h \
	src/spool/progress.c src/spool/progress.h \
	src/spool/spool.c src/spool/spool.h \
	src/spool/metadata.c src/spool/metadata.h \
	src/spool/result.c src/spool/result.h \
	src/spool/callback.c src/spool/callback.h \
	src/spool/runjob.c src/spool/runjob.h \
	src/spool/worker.c src/spool/worker.h
src_libsdbatch_a_SOURCES += src/spool/outbox.c src/spool/outbox.h
src_libsdbatch_a_SOURCES += src/spool/policy.c src/spool/policy.h
