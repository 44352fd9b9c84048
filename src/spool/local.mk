## src/spool
