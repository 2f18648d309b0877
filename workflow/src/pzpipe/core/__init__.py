"""Infrastructure every other layer uses: configuration and its schema defaults, atomic
I/O, per-job logging, provenance, the z grid, the numba cache setting, column names,
chunk/batch layout and HATS I/O. Imports nothing from the other subpackages.
"""
