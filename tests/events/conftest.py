"""Event tests: the event record and bounce classification, pure Python (marker ``unit``); the
real-world reply corpus they read is tests/data/bounce_corpus.tsv."""
