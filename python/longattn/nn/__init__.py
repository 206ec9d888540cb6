"""Attention modules built from the longattn operators (the Python twins of nn/ in C++)."""
from .shatter import Shatter, ShatterPartition  # noqa: F401
from .yoso import YOSOAttention  # noqa: F401

__all__ = ["Shatter", "ShatterPartition", "YOSOAttention"]
