"""Attention modules built on longattn's operators."""
from .yoso import YOSOAttention

__all__ = ["YOSOAttention"]
