## src/web: `sdbatch serve` (the HTTP API, server-sent events) and the
## gallery page (served, or written by `sdbatch gallery`)
src_libsdbatch_a_SOURCES += src/web/gallery.c src/web/gallery.h
if HAVE_MICROHTTPD
src_libsdbatch_a_SOURCES += src/web/server.c src/web/server.h
endif
