"""The version of bp_torch, in one place: pyproject.toml reads it from here."""

__version__ = "0.1.0"
