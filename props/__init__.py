"""PROPS benchmark suite: privacy-preserving preference alignment, benchmarked."""

__version__ = "0.1.0"
