## tests for spool
