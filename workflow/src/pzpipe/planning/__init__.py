"""Planning a release before the data exists and measuring the pipeline: job sizes
(``resources``), the one time model (``forecast``), the planner (``plan``), the
benchmark (``bench``) and synthetic Rubin-like catalogs for rehearsals (``synth``).
"""
