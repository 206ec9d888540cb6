"""Attention modules built from the longattn operators (the Python twins of nn/ in C++)."""
from .fast_rpb import FastRPB  # noqa: F401
from .shatter import Shatter, ShatterPartition  # noqa: F401
from .yoso import YOSOAttention  # noqa: F401

__all__ = ["FastRPB", "Shatter", "ShatterPartition", "YOSOAttention"]
