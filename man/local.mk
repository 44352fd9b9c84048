## man: the manual pages
dist_man_MANS += man/sdbatch.1 man/sdbatch-job.5 man/sdbatch.yaml.5
