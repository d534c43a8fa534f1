"""Training a TopK sparse autoencoder on a layer's activations (Gao et al. 2024, "Scaling and
evaluating sparse autoencoders"), in plain torch on the CPU or a GPU.

Why not ``overcomplete``'s ``train_sae``: ``overcomplete`` 0.3.0 does not import with
matplotlib >= 3.9 (its colour maps call the removed ``matplotlib.cm.get_cmap``), prints per
epoch instead of a progress bar, and its eval-mode dictionary is fused in place; this trainer
is small, seeded and writes the same kind of TopK SAE (``overcomplete``'s and SAELens' files
are read by :mod:`cosy_bench.units.formats`).

Recipe: inputs centred by ``b_dec`` (initialised to the mean), decoder atoms of unit norm
(renormalised after every step), the encoder initialised as the decoder's transpose, Adam on
the reconstruction error normalised by the data's variance, and the AuxK loss (1/32) that
lets latents dead for a whole epoch reconstruct the residual from their top pre-activations.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from cosy_bench.units.dictionary import SparseDictionary

#: weight of the AuxK loss (Gao et al.: 1/32)
AUX_WEIGHT = 1 / 32
#: below this many multiply-adds per step's encoder product (batch x d_in x d_sae), a CPU
#: trains on one thread: intra-op threads cost more than such small products gain (65x
#: slower with 2 busy cores at 256 x 25 x 100)
ONE_THREAD_BELOW = 2**27


@dataclass(frozen=True)
class TrainSettings:
    """What decides a trained dictionary (its cache key, with the training activations)."""

    d_sae: int
    k: int
    epochs: int = 50
    lr: float = 5e-3
    batch_size: int = 256
    seed: int = 0

    def check(self, d_in: int, n: int) -> None:
        bad = []
        if self.d_sae < 1:
            bad.append(f"units.d_sae={self.d_sae} must be >= 1")
        if not 1 <= self.k <= self.d_sae:
            bad.append(f"units.k={self.k} must be between 1 and the dictionary size {self.d_sae}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            bad.append(f"units.epochs={self.epochs}, units.batch_size={self.batch_size} and "
                       f"units.lr={self.lr} must be positive")
        if n < 2:
            bad.append(f"{n} training activations: at least 2 are needed")
        if bad:
            raise ValueError(f"SAE training on {n} x {d_in} activations: " + "; ".join(bad))

    def key(self) -> dict:
        return {"trainer": "topk-v1", **asdict(self)}


def _normalise_rows(w: torch.Tensor) -> None:
    with torch.no_grad():
        w.div_(w.norm(dim=1, keepdim=True).clamp_min(1e-8))


def _topk(h: torch.Tensor, k: int) -> torch.Tensor:
    top = torch.topk(h, k, dim=-1)
    return torch.zeros_like(h).scatter(-1, top.indices, torch.relu(top.values))


def evaluate(dictionary: SparseDictionary, x: torch.Tensor) -> dict:
    """``r2`` (1 - residual / total sum of squares about the mean, all units together), ``l0``
    (mean active latents per row) and ``dead_fraction`` (latents active on no row) of
    ``dictionary`` on activations x [N, C]."""
    x = x.float()
    sse, active, fired = 0.0, 0.0, torch.zeros(dictionary.d_sae, dtype=torch.bool)
    with torch.no_grad():
        for r in range(0, x.shape[0], 8192):
            xb = x[r:r + 8192]
            z = dictionary.encode(xb)
            sse += float(((dictionary.decode(z) - xb) ** 2).sum())
            nz = z != 0
            active += float(nz.sum())
            fired |= nz.any(dim=0)
    sst = float(((x - x.mean(dim=0)) ** 2).sum())
    return {"r2": 1.0 - sse / sst if sst > 0 else float("nan"),
            "l0": active / x.shape[0], "dead_fraction": float((~fired).float().mean())}


def train_topk_sae(x: torch.Tensor, settings: TrainSettings, progress: bool = True,
                   device: str | torch.device = "cpu") -> tuple[SparseDictionary, dict]:
    """A TopK SAE trained on activations x [N, C] (float) and its figures on x: ``r2``,
    ``l0``, ``dead_fraction``, ``seconds``, ``n_train``. Deterministic for a seed on one
    machine and thread count."""
    n, c = x.shape
    settings.check(c, n)
    small = settings.batch_size * c * settings.d_sae < ONE_THREAD_BELOW
    threads = torch.get_num_threads()
    if small and torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    try:
        return _train(x, settings, progress, device)
    finally:
        torch.set_num_threads(threads)


def _train(x: torch.Tensor, settings: TrainSettings, progress: bool,
           device: str | torch.device) -> tuple[SparseDictionary, dict]:
    n, c = x.shape
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(settings.seed)
    data = x.float().to(device)
    # trained on x / s, s^2 the mean squared deviation per unit (so lr fits any layer's scale)
    s = float(((data - data.mean(dim=0)) ** 2).mean()) ** 0.5 or 1.0
    data = data / s
    scale = float(((data - data.mean(dim=0)) ** 2).sum(dim=1).mean()) or 1.0
    w_dec = torch.randn(settings.d_sae, c, generator=gen).to(device)
    _normalise_rows(w_dec)
    w_dec.requires_grad_(True)
    w_enc = w_dec.detach().T.clone().requires_grad_(True)
    b_enc = torch.zeros(settings.d_sae, device=device, requires_grad=True)
    b_dec = data.mean(dim=0).clone().requires_grad_(True)
    params = [w_enc, b_enc, w_dec, b_dec]
    opt = torch.optim.Adam(params, lr=settings.lr)
    k_aux = max(1, min(c // 2, settings.d_sae))
    steps = settings.epochs * -(-n // settings.batch_size)
    bar = _bar(steps, progress)
    fired_last = torch.ones(settings.d_sae, dtype=torch.bool, device=device)
    for _ in range(settings.epochs):
        fired = torch.zeros_like(fired_last)
        order = torch.randperm(n, generator=gen).to(device)
        for r in range(0, n, settings.batch_size):
            xb = data[order[r:r + settings.batch_size]]
            h = (xb - b_dec) @ w_enc + b_enc
            z = _topk(h, settings.k)
            residual = xb - (z @ w_dec + b_dec)
            loss = (residual ** 2).sum(dim=1).mean() / scale
            dead = ~fired_last
            if dead.any():  # AuxK: the dead latents' top pre-activations model the residual
                aux = _topk(h.masked_fill(~dead, float("-inf")), min(k_aux, int(dead.sum())))
                aux = torch.nan_to_num(aux, nan=0.0, neginf=0.0)
                aux_err = ((aux @ w_dec - residual.detach()) ** 2).sum(dim=1).mean() / scale
                loss = loss + AUX_WEIGHT * aux_err
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _normalise_rows(w_dec)
            fired |= (z != 0).any(dim=0)
            bar.update(1)
        fired_last = fired
    bar.close()
    # the same latents of x itself: (x - s b_dec) (W_enc / s) + b_enc; x_hat = z (s W_dec) + s b_dec
    dictionary = SparseDictionary(w_enc.detach().cpu() / s, b_enc.detach().cpu(),
                                  w_dec.detach().cpu() * s, b_dec.detach().cpu() * s,
                                  activation="topk", k=settings.k, pre_bias=True,
                                  source="trained")
    metrics = evaluate(dictionary, x)
    metrics.update(seconds=time.perf_counter() - start, n_train=n)
    return dictionary, metrics


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="SAE training", unit="step", disable=not enabled,
                leave=False)
