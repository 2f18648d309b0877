"""What describes one run: its configuration (``config``: loading, the schema and the
estimators' declared settings, defaults, hashes), the layout of its input in chunks and
batches (``layout``) and its provenance records (``provenance``)."""
