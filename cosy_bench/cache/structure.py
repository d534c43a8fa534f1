"""Structure checks of cache artefacts, run by their readers after the checksum and key
(``check=`` of :meth:`cosy_bench.cache.store.Cache.load_tensors` and ``read_text``): a file
that verifies but is not what the reader can use (a garbage body written with a valid
checksum, another version's layout) raises ValueError here, naming what is wrong; the reader
then moves it aside and recomputes it."""

from __future__ import annotations

import torch

_KINDS = {
    "float": lambda t: t.is_floating_point(),
    "int": lambda t: not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool,
    "bool": lambda t: t.dtype == torch.bool,
}


def expect_tensors(tensors: dict[str, torch.Tensor], spec: dict[str, tuple[int, str]],
                   sizes: dict[str, tuple[int | None, ...]] | None = None) -> None:
    """Raise ValueError unless ``tensors`` has exactly the names of ``spec``, each with its
    number of dimensions and kind (``"float"``, ``"int"``, ``"bool"``), and, for the names
    of ``sizes``, those sizes (None: any)."""
    problems = []
    if set(tensors) != set(spec):
        problems.append(f"tensors {sorted(tensors)}, expected {sorted(spec)}")
    for name, (ndim, kind) in spec.items():
        t = tensors.get(name)
        if t is None:
            continue
        if t.dim() != ndim:
            problems.append(f"{name} has {t.dim()} dimensions {tuple(t.shape)}, expected {ndim}")
        elif not _KINDS[kind](t):
            problems.append(f"{name} is {t.dtype}, expected a {kind} dtype")
        want = (sizes or {}).get(name)
        if want is not None and t.dim() == len(want) and any(
                w is not None and s != w for s, w in zip(t.shape, want, strict=True)):
            problems.append(f"{name} has shape {tuple(t.shape)}, expected "
                            f"{tuple('*' if w is None else w for w in want)}")
    if problems:
        raise ValueError("; ".join(problems))


def expect_equal(what: str, got: int, expected: int) -> None:
    """Raise ValueError unless ``got == expected`` (``what``: which size)."""
    if got != expected:
        raise ValueError(f"{what} is {got}, expected {expected}")
