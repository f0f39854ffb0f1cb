"""Bananastand: a self-hosted server for the Nano Banana image-generation API."""

__version__ = "0.1.0"  # the one place: pyproject.toml reads it (dynamic)
