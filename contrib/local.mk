## contrib: systemd units, a Slurm job-array script and a cron example.
## The units and the cron file name this build's bindir and sysconfdir
## (made from their .in files), so that the binary they start and the
## configuration they name are the ones `make install` put there.
contribdir = $(docdir)/contrib
CONTRIB_GENERATED = contrib/sdbatch.service contrib/sdbatch-gpu@.service \
	contrib/sdbatch-serve.service contrib/sdbatch.cron
contrib_DATA = $(CONTRIB_GENERATED)
dist_contrib_DATA = contrib/sdbatch-slurm.sh
EXTRA_DIST += $(CONTRIB_GENERATED:=.in)
CLEANFILES += $(CONTRIB_GENERATED)
$(CONTRIB_GENERATED): %: %.in Makefile
	$(AM_V_GEN)$(MKDIR_P) contrib && \
	sed -e 's|@bindir[@]|$(bindir)|g' -e 's|@sysconfdir[@]|$(sysconfdir)|g' \
	    '$(srcdir)/$@.in' > '$@.tmp' && mv '$@.tmp' '$@'
