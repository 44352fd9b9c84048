## examples: job files and a configuration, installed with the documentation
examplesdir = $(docdir)/examples
dist_examples_DATA = examples/txt2img.yaml examples/full.yaml \
	examples/img2img.yaml examples/inpaint.yaml examples/callback.yaml \
	examples/sdbatch.yaml examples/hub.yaml \
	examples/street.png examples/wall.png examples/wall-mask.png
