"""Attention modules built from the longattn operators."""
from .shatter import Shatter, ShatterPartition  # noqa: F401

__all__ = ["Shatter", "ShatterPartition"]
