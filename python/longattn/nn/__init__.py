"""Attention modules built from the longattn operators (the Python twins of nn/ in C++)."""
from .dropout import Dropout, row_offset  # noqa: F401
from .fast_rpb import FastRPB  # noqa: F401
from .shatter import Shatter, ShatterPartition  # noqa: F401
from .yoso import YOSOAttention  # noqa: F401
from .encoder import (ATTENTIONS, AttentionSpec, Classifier, Encoder, ModelConfig,  # noqa: F401
                      MultiHeadAttention, attention_names, count_parameters, make_attention_core)

__all__ = ["Dropout", "row_offset", "FastRPB", "Shatter", "ShatterPartition", "YOSOAttention", "ATTENTIONS", "AttentionSpec",
           "Classifier", "Encoder", "ModelConfig", "MultiHeadAttention", "attention_names",
           "count_parameters", "make_attention_core"]
