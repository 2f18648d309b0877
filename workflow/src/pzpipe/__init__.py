"""pzpipe: photo-z tables for Rubin LSST data releases with RAIL and Snakemake."""

__version__ = "0.1.0"


class PipelineError(Exception):
    """An error the user can fix: the message names the file, column or key and the fix."""
