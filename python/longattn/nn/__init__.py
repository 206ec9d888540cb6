"""Attention modules built on the longattn operators (the Python twins of nn/ in C++)."""
from .fast_rpb import FastRPB  # noqa: F401
