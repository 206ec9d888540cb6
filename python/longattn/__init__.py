"""longattn: efficient attention for long sequences (C++ operators for PyTorch).

Every function here calls a registered torch operator (``torch.ops.longattn.*``), the same one
C++ users call through ``<longattn/ops.h>``; gradients come from its C++ autograd.
"""
import os as _os

import torch as _torch

__version__ = "0.1.0"

_HERE = _os.path.dirname(__file__)
_LIB = _os.path.join(_HERE, "_lib", "liblongattn_ops.so")
if not _os.path.exists(_LIB):
    raise ImportError(
        f"longattn: the operator library {_LIB} is not built; run `make build` in the repository"
    )
# A pip-installed library was compiled against one torch release, whose C++ ABI the next one does
# not keep: say so plainly instead of failing on an undefined symbol. (The in-tree build has no
# such file: it is rebuilt by `make build` against the environment's torch.)
_BUILT_TORCH = _os.path.join(_HERE, "_build_torch.txt")
if _os.path.exists(_BUILT_TORCH):
    with open(_BUILT_TORCH) as _f:
        _built = _f.read().strip()
    if _built != _torch.__version__:
        raise ImportError(
            f"longattn was built against torch {_built}, but this environment has torch {_torch.__version__}; "
            "reinstall it against this torch: pip install --no-build-isolation --force-reinstall --no-deps <longattn>"
        )
_torch.ops.load_library(_LIB)

from ._softmax import softmax_attention  # noqa: E402
from ._kernelized import feature_map, kernelized_attention, random_features  # noqa: E402
from ._toeplitz import toeplitz_matmul, toeplitz_matmul_2d  # noqa: E402
from ._kernelized_rpe import kernelized_rpe_attention  # noqa: E402
from ._shatter import shatter_attention  # noqa: E402
from ._yoso import yoso_attention, yoso_expectation  # noqa: E402
from ._dropout import dropout  # noqa: E402
from ._info import info  # noqa: E402
from . import nn  # noqa: E402

__all__ = ["softmax_attention", "kernelized_attention", "random_features", "feature_map",
           "toeplitz_matmul", "toeplitz_matmul_2d", "kernelized_rpe_attention", "shatter_attention",
           "yoso_attention", "yoso_expectation", "dropout", "nn", "info"]
