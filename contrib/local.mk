## contrib: a systemd unit, a Slurm job-array script and a cron example
contribdir = $(docdir)/contrib
dist_contrib_DATA = contrib/sdbatch.service contrib/sdbatch-gpu@.service \
	contrib/sdbatch-serve.service \
	contrib/sdbatch-slurm.sh \
	contrib/sdbatch.cron
