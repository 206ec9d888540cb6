"""Seeds: the operators take 64 random bits, passed through torch's int64 schema."""
import operator

__all__ = ["seed_bits"]


def seed_bits(who, seed):
    """The int64 that carries seed's 64 bits: seeds in [2**63, 2**64) wrap to negatives, as the
    kernels read the value as uint64 anyway. Anything else is a clear ValueError/TypeError."""
    try:
        s = operator.index(seed)
    except TypeError:
        raise TypeError(f"{who}: seed must be an integer, got {type(seed).__name__}") from None
    if not -(2**63) <= s < 2**64:
        raise ValueError(f"{who}: seed must be an integer in [-2**63, 2**64) (64 bits), got {s}")
    return s - 2**64 if s >= 2**63 else s
