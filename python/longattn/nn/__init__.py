"""Attention modules built on the longattn operators (the Python twins of nn/ in C++)."""
