"""The release format and its readers: point estimates from PDFs (``pointest``), the
compressed-CDF PDF codec (``pdfstore``, numba) and its numpy reader (``read``), the
release schema and column dictionary (``schema``), the release README (``readme``), the receiver's check of a copy (``verify``).
``read`` and ``verify`` stay importable with the light ``[read]`` install (numpy, pyarrow, qp).
"""
