"""Infrastructure every other layer uses: atomic I/O and parquet metadata (``io``), per-job
logging (``jobs``), the z grid (``zgrid``), the numba cache setting (``numba_cache``), the
skinny tables' column names and flags (``columns``) and HATS I/O (``hatsio``). Imports no
other subpackage of pzpipe.
"""
