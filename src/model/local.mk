## src/model
src_libsdbatch_a_SOURCES += src/model/weights.c src/model/weights.h
src_libsdbatch_a_SOURCES += src/model/vae.c src/model/vae.h
src_libsdbatch_a_SOURCES += src/model/checkpoint.c src/model/checkpoint.h
src_libsdbatch_a_SOURCES += src/model/clip.c src/model/clip.h src/model/unet.c src/model/unet.h
src_libsdbatch_a_SOURCES += src/model/tokenizer.c src/model/tokenizer.h
src_libsdbatch_a_SOURCES += src/model/synth.c src/model/synth.h
src_libsdbatch_a_SOURCES += src/model/hub.c src/model/hub.h
src_libsdbatch_a_SOURCES += src/model/lora.c src/model/lora.h
src_libsdbatch_a_SOURCES += src/model/spm.c src/model/spm.h src/model/t5.c src/model/t5.h
src_libsdbatch_a_SOURCES += src/model/mmdit.c src/model/mmdit.h
