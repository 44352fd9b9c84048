## tests for models
check_PROGRAMS += tests/test_vae
tests_test_vae_LDADD = $(TEST_LDADD)
TESTS += tests/test_vae
check_PROGRAMS += tests/test_clip tests/test_unet
tests_test_clip_LDADD = $(TEST_LDADD)
tests_test_unet_LDADD = $(TEST_LDADD)
TESTS += tests/test_clip tests/test_unet
