"""Sparse dictionaries on disk (``units.path``): the suite's own safetensors file, a SAELens
folder and an ``overcomplete`` state dict. The formats are defined in docs/units.md.

* ``FILE.safetensors`` (this suite; also what a trained dictionary is cached as): tensors
  ``W_enc`` [d_in, d_sae], ``b_enc`` [d_sae], ``W_dec`` [d_sae, d_in], ``b_dec`` [d_in] and, for
  ``jumprelu``, ``threshold`` [d_sae]; metadata ``format=cosy_bench.sae``, ``version=1``,
  ``activation`` (topk, relu, jumprelu), ``k`` (topk), ``pre_bias`` (true/false), ``d_in``,
  ``d_sae`` and, where written by the suite, ``metrics`` (JSON) and a checksum.
* a SAELens folder: ``cfg.json`` (``d_in``, ``d_sae``, ``architecture`` standard/topk/jumprelu
  or ``activation_fn_str`` with ``activation_fn_kwargs.k``, ``k``, ``apply_b_dec_to_input``,
  ``normalize_activations`` none) and ``sae_weights.safetensors`` (SAELens' tensor names;
  ``threshold`` or ``log_threshold`` for jumprelu).
* ``FILE.pt`` / ``FILE.pth``: ``torch.save(sae.state_dict())`` of an ``overcomplete``
  ``TopKSAE`` (give ``units.k``), ``SAE`` (``units.activation=relu``) or ``JumpSAE`` with the
  default linear encoder and l2-normalised dictionary.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from cosy_bench.cache.checked import DIGEST_KEY, tensors_digest
from cosy_bench.cache.store import save_tensors_atomic
from cosy_bench.units.dictionary import ACTIVATIONS, SparseDictionary

FORMAT, VERSION = "cosy_bench.sae", "1"
SAELENS_CFG, SAELENS_WEIGHTS = "cfg.json", "sae_weights.safetensors"
_SAELENS_ARCH = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu"}
_OVERCOMPLETE = {"encoder.final_block.0.weight", "encoder.final_block.0.bias",
                 "dictionary._weights", "dictionary.multiplier"}


def save_dictionary(path: str | Path, dictionary: SparseDictionary,
                    metrics: dict | None = None) -> None:
    """Write ``dictionary`` (and its training ``metrics``) as the suite's safetensors file,
    atomically and with its checksum."""
    meta = {"format": FORMAT, "version": VERSION, "activation": dictionary.activation,
            "pre_bias": "true" if dictionary.pre_bias else "false",
            "d_in": str(dictionary.d_in), "d_sae": str(dictionary.d_sae)}
    if dictionary.k is not None:
        meta["k"] = str(dictionary.k)
    if metrics:
        meta["metrics"] = json.dumps(metrics, sort_keys=True)
    save_tensors_atomic(path, dictionary.tensors(), meta)


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; its checksum verified where it has one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as err:  # SafetensorError, OSError: not a safetensors file
        raise ValueError(f"units.path={str(path)!r} is not a readable safetensors file "
                         f"({err})") from err
    if DIGEST_KEY in meta and tensors_digest(tensors) != meta[DIGEST_KEY]:
        raise ValueError(f"units.path={str(path)!r}: its tensors do not match the checksum "
                         "written with them (a changed or half-written file)")
    return tensors, meta


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file (no tensors read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def metrics_of(meta: dict[str, str]) -> dict:
    """The training figures stored with a dictionary (empty where none)."""
    return json.loads(meta["metrics"]) if meta.get("metrics") else {}


def _need(tensors: dict, names, where: str) -> None:
    missing = [n for n in names if n not in tensors]
    if missing:
        raise ValueError(f"{where}: missing tensors {missing} (it holds {sorted(tensors)})")


def from_suite_file(tensors: dict, meta: dict, where: str, activation: str | None = None,
                    k: int | None = None) -> SparseDictionary:
    """A dictionary from the suite's tensors and metadata; ``activation``/``k`` (the
    config's) fill in where the metadata has none and must agree where it has them."""
    _need(tensors, ("W_enc", "b_enc", "W_dec", "b_dec"), where)
    if meta.get("format") not in (None, FORMAT):
        raise ValueError(f"{where}: metadata format={meta['format']!r}, expected {FORMAT!r}")
    act = meta.get("activation") or activation
    if act is None:
        raise ValueError(f"{where}: no 'activation' in its metadata; give units.activation "
                         f"(one of {ACTIVATIONS}) and, for topk, units.k")
    if activation is not None and act != activation:
        raise ValueError(f"{where}: its metadata says activation={act!r} but units.activation="
                         f"{activation!r}; drop units.activation or give the right file")
    file_k = int(meta["k"]) if meta.get("k") else None
    if file_k is not None and k is not None and file_k != int(k):
        raise ValueError(f"{where}: its metadata says k={file_k} but units.k={k}")
    for key, dim in (("d_in", 0), ("d_sae", 1)):
        if key in meta and int(meta[key]) != tensors["W_enc"].shape[dim]:
            raise ValueError(f"{where}: metadata {key}={meta[key]} but W_enc is "
                             f"{tuple(tensors['W_enc'].shape)}")
    return SparseDictionary(tensors["W_enc"], tensors["b_enc"], tensors["W_dec"],
                            tensors["b_dec"], activation=act, k=file_k or k,
                            threshold=tensors.get("threshold"),
                            pre_bias=meta.get("pre_bias", "true").lower() == "true",
                            source=where)


def from_saelens(folder: Path, k: int | None = None) -> SparseDictionary:
    """A dictionary from a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``)."""
    where = f"units.path={str(folder)!r} (SAELens folder)"
    cfg_file, weights = folder / SAELENS_CFG, folder / SAELENS_WEIGHTS
    if not cfg_file.is_file() or not weights.is_file():
        raise ValueError(f"{where}: a SAELens folder holds {SAELENS_CFG} and {SAELENS_WEIGHTS}; "
                         f"found {sorted(p.name for p in folder.iterdir())}")
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    arch = cfg.get("architecture") or cfg.get("activation_fn_str") or "standard"
    if arch == "standard" and cfg.get("activation_fn_str") == "topk":
        arch = "topk"  # SAELens before 6.0 wrote topk as a standard SAE with a topk activation
    if arch not in _SAELENS_ARCH:
        raise ValueError(f"{where}: architecture {arch!r} is not supported (only "
                         f"{sorted(_SAELENS_ARCH)}: linear encoder and one nonlinearity)")
    norm = cfg.get("normalize_activations") or "none"
    if norm != "none":
        raise ValueError(f"{where}: normalize_activations={norm!r} rescales the layer's "
                         "activations by a factor the folder does not hold; only 'none' is read")
    tensors, _ = read_safetensors(weights)
    if "threshold" not in tensors and "log_threshold" in tensors:
        tensors["threshold"] = tensors["log_threshold"].exp()
    scale = tensors.get("scaling_factor")
    if scale is not None and not torch.allclose(scale.float(), torch.ones_like(scale.float())):
        raise ValueError(f"{where}: a finetuning scaling_factor is not supported")
    cfg_k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    for key, dim in (("d_in", 0), ("d_sae", 1)):
        if key in cfg and int(cfg[key]) != tensors["W_enc"].shape[dim]:
            raise ValueError(f"{where}: cfg.json {key}={cfg[key]} but W_enc is "
                             f"{tuple(tensors['W_enc'].shape)}")
    return SparseDictionary(tensors["W_enc"], tensors["b_enc"], tensors["W_dec"],
                            tensors["b_dec"], activation=_SAELENS_ARCH[arch],
                            k=int(cfg_k) if cfg_k is not None else k,
                            threshold=tensors.get("threshold"),
                            pre_bias=bool(cfg.get("apply_b_dec_to_input", True)), source=where)


def from_overcomplete(path: Path, activation: str | None = None,
                      k: int | None = None) -> SparseDictionary:
    """A dictionary from ``torch.save(sae.state_dict())`` of an ``overcomplete`` SAE."""
    where = f"units.path={str(path)!r} (overcomplete state dict)"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, a whole module saved, ...
        raise ValueError(f"{where}: not a plain state dict ({err}); save it with "
                         "torch.save(sae.state_dict(), path)") from err
    if not isinstance(state, dict):
        raise ValueError(f"{where}: holds a {type(state).__name__}, not a state dict")
    _need(state, sorted(_OVERCOMPLETE), where)
    extra = sorted(set(state) - _OVERCOMPLETE - {"thresholds"})
    if extra:
        raise ValueError(f"{where}: only overcomplete's linear encoder is read; it also holds "
                         f"{extra[:6]} (a normalisation layer or a deeper encoder)")
    jump = "thresholds" in state
    act = activation or ("jumprelu" if jump else "topk")
    if jump != (act == "jumprelu"):
        raise ValueError(f"{where}: units.activation={act!r} does not fit a state dict "
                         f"{'with' if jump else 'without'} JumpSAE thresholds")
    if act == "topk" and k is None:
        raise ValueError(f"{where}: an overcomplete TopKSAE does not save its top_k: give "
                         "units.k (or units.activation=relu for a plain SAE)")
    weight = state["dictionary._weights"].float()
    atoms = weight / (weight.norm(dim=1, keepdim=True) + 1e-8)  # overcomplete's l2 projection
    w_dec = atoms * math.exp(float(state["dictionary.multiplier"]))
    enc = state["encoder.final_block.0.weight"].float()
    return SparseDictionary(enc.T, state["encoder.final_block.0.bias"], w_dec,
                            torch.zeros(w_dec.shape[1]), activation=act, k=k,
                            threshold=state["thresholds"].exp() if jump else None,
                            pre_bias=False, source=where)


def load_dictionary(path: str | Path, activation: str | None = None,
                    k: int | None = None) -> tuple[SparseDictionary, dict]:
    """The dictionary at ``path`` and its stored training figures (may be empty)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"units.path={str(path)!r} does not exist: give a .safetensors "
                                "file, a SAELens folder or an overcomplete .pt state dict")
    if path.is_dir():
        return from_saelens(path, k), {}
    if path.suffix in (".pt", ".pth"):
        return from_overcomplete(path, activation, k), {}
    if path.suffix != ".safetensors":
        raise ValueError(f"units.path={str(path)!r}: expected a .safetensors file, a SAELens "
                         "folder or an overcomplete .pt/.pth state dict")
    tensors, meta = read_safetensors(path)
    where = f"units.path={str(path)!r}"
    return from_suite_file(tensors, meta, where, activation, k), metrics_of(meta)
