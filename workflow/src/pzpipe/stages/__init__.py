"""The pipeline's stages, one module each, called by one rule file each:
``partition``, ``train``, ``estimate``, ``validate`` (+ ``metrics``, ``valplots``),
``export``, ``audit``, ``progress`` (the run summary); ``samples`` reads a training or
validation sample through the partition transform.
"""
