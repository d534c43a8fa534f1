"""CLIP's image-text products ``P[i, m] = I_i . T_m`` (normalised embeddings), held whole
(:func:`image_text_similarity`) or computed block by block on demand (:class:`ClipProducts`),
so that the similarity functions never need ``P`` ``[N, M]`` in memory.

Every entry is the float64 dot product of the float64-normalised rows, rounded once to the
working dtype (at least float32): the value does not depend on the block it was computed in
(a float32 GEMM rounds differently by block shape), so a blocked run equals a whole one
(except, with probability about 1e-9 per entry, one float32 ulp where the float64 kernels'
last bits straddle a rounding boundary).
"""

from __future__ import annotations

import torch

__all__ = ["ClipProducts", "image_text_similarity"]

_EPS = 1e-12
ROW_BLOCK = 4096  # image rows per float64 product block


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.to(torch.float64), dim=1, eps=_EPS)


def _dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


class ClipProducts:
    """``P`` ``[N, M]`` from image embeddings ``[N, D]`` and text embeddings ``[M, D]`` without
    holding it: ``products[rows, c0:c1]`` (``rows`` a slice or an index tensor) computes that
    block in blocks of ``row_block`` rows (float64 scratch ``row_block * (D + columns)``).
    Equal to the same block of :func:`image_text_similarity` (see the module docstring)."""

    def __init__(self, image_emb: torch.Tensor, text_emb: torch.Tensor,
                 row_block: int = ROW_BLOCK):
        img, txt = torch.as_tensor(image_emb), torch.as_tensor(text_emb)
        if img.ndim != 2 or txt.ndim != 2 or img.shape[1] != txt.shape[1]:
            raise ValueError(f"need image embeddings [N, D] and text embeddings [M, D], got "
                             f"{tuple(img.shape)}, {tuple(txt.shape)}")
        self.images = img
        self.row_block = max(1, row_block)
        self.dtype = _dtype(img, txt)
        self.texts = _normalise(txt)  # [M, D] float64
        self.shape = (img.shape[0], txt.shape[0])
        self.ndim = 2

    def __getitem__(self, key) -> torch.Tensor:
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        if not isinstance(cols, slice):
            raise TypeError("ClipProducts: columns must be a slice")
        txt = self.texts[cols]
        idx = torch.arange(self.shape[0])[rows] if isinstance(rows, slice) else rows.reshape(-1)
        out = torch.empty(idx.numel(), txt.shape[0], dtype=self.dtype)
        for r0 in range(0, idx.numel(), self.row_block):
            r1 = min(r0 + self.row_block, idx.numel())
            img = _normalise(self.images[idx[r0:r1]])
            out[r0:r1] = img @ txt.T
        return out


def image_text_similarity(
    image_emb: torch.Tensor, text_emb: torch.Tensor, chunk_size: int | None = ROW_BLOCK
) -> torch.Tensor:
    """CLIP products ``P = normalise(image_emb) @ normalise(text_emb).T``, held whole.

    Args:
        image_emb: ``[N, D]`` image embeddings; text_emb: ``[M, D]`` text embeddings
            (rows L2-normalised here, as the authors' ``get_similarity_from_activations``).
        chunk_size: image rows per block (``None``: all at once).

    Returns:
        ``[N, M]`` in the promoted dtype (at least float32); entries as :class:`ClipProducts`.
    """
    img = torch.as_tensor(image_emb)
    txt = torch.as_tensor(text_emb)
    if img.ndim != 2 or txt.ndim != 2 or img.shape[1] != txt.shape[1]:
        raise ValueError(f"need [N, D] and [M, D], got {tuple(img.shape)}, {tuple(txt.shape)}")
    txt_n = _normalise(txt)
    n = img.shape[0]
    out = torch.empty(n, txt.shape[0], dtype=_dtype(img, txt))
    step = n if not chunk_size or chunk_size <= 0 else chunk_size
    for r0 in range(0, n, max(step, 1)):
        out[r0 : r0 + step] = _normalise(img[r0 : r0 + step]) @ txt_n.T
    return out
