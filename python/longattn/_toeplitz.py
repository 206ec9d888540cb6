import torch

__all__ = ["toeplitz_matmul", "toeplitz_matmul_2d"]


def toeplitz_matmul(coeffs, x, *, causal=False, path="auto"):
    """Toeplitz product along the sequence, by FFT in O(N log N) (or directly for short N).

    coeffs [H, 2N-1] holds one value per relative offset r = j - i (key minus query) at index
    r + N - 1; x [B, H, N, C] -> y [B, H, N, C] with y_i = sum_j coeffs[j - i + N - 1] x_j.
    causal: only j <= i. path: "auto" (by cost), "fft" or "direct" (the fused CPU kernel's two
    implementations, same result), or "reference" (torch.fft in channel chunks: any device;
    tensors off the CPU take it whatever ``path`` says). Differentiable in coeffs and x.
    """
    return torch.ops.longattn.toeplitz_matmul(coeffs, x, causal=causal, path=path)


def toeplitz_matmul_2d(row_coeffs, col_coeffs, x, *, height, width, path="auto"):
    """The separable 2-D relative bias times x, for an image flattened row by row.

    x [B, H, height*width, C]; row_coeffs [H, 2*height-1]; col_coeffs [H, 2*width-1];
    B[(a,b),(a',b')] = row_coeffs[a'-a+height-1] + col_coeffs[b'-b+width-1]. Computed from
    row and column sums with 1-D transforms, never an N x N matrix. path: as in
    ``toeplitz_matmul``. Differentiable in all three.
    """
    return torch.ops.longattn.toeplitz_matmul_2d(row_coeffs, col_coeffs, x, height=height,
                                                 width=width, path=path)
