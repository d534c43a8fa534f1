"""MILAN checkpoints: the published ones (downloaded into the cache, unpickled with an
allow-list), the toy world's (safetensors + JSON, shipped), and random initialisations.

The published files (``milan-{name}.pth``) are ``torch.save``\\ d dicts written by the
authors' ``SerializableModule``::

    {"properties": {"indexer": {"properties": {"vocab": {"properties": {"tokens": (...)}},
                                               "tokenize": {"properties": {"nlp": (config,
                                                            bytes), ...}}, ...}},
                    "encoder": {"properties": {"config": "resnet101", "pretrained": True}},
                    "lm": {"properties": {"indexer": ..., "embedding_size": 128, ...}},
                    "embedding_size": 128, "hidden_size": 512, ..., "beam_size": 50},
     "children": {"encoder": "PyramidConvEncoder"},
     "state_dict": OrderedDict(...)}

What is trusted: the file is unpickled by a restricted unpickler that builds only
containers, strings, numbers, bytes, tensors and their storages, and reads the spaCy config
in the tokenizer entry as a plain dict (the spaCy pipeline bytes are never loaded: this
suite tokenizes by itself). Any other object in the file stops the load with an error that
names it; ``trust_checkpoint=True`` lifts the restriction for a file you trust.
"""

from __future__ import annotations

import json
import logging
import pickle
import types
import urllib.request
from pathlib import Path

import torch

from cosy_bench.cache.store import default_cache_dir
from cosy_bench.explainers.milan.model import (
    BACKBONES,
    Captioner,
    LanguageModel,
    PyramidEncoder,
    Vocabulary,
)

log = logging.getLogger("cosy_bench")

#: The published MILAN checkpoints (name -> URL), trained on MILANNOTATIONS subsets.
PUBLISHED = {name: f"http://milan.csail.mit.edu/models/milan-{name}.pth"
             for name in ("base", "cls", "gen", "imagenet", "places365", "alexnet",
                          "resnet152", "biggan")}
TOY_CHECKPOINT = Path(__file__).resolve().parents[2] / "toyworld" / "weights" / "toy_milan.safetensors"
TOY_TRAIN_COMMAND = ("python -m cosy_bench.toyworld.training.milan --seed 0 "
                     "--out cosy_bench/toyworld/weights/toy_milan.safetensors")

#: Words of a randomly initialised captioner (``checkpoint=random``): its captions are noise,
#: the vocabulary only has to be plausible.
RANDOM_WORDS = tuple(
    "objects things animals dogs cats birds people faces text water sky grass trees cars "
    "buildings food red blue green yellow white black orange purple pink brown stripes dots "
    "circles squares lines edges textures patterns of and with in on the a".split())


#: Captioner and language-model hyperparameters, as named in the published properties.
CAPTIONER_HPARAMS = ("embedding_size", "hidden_size", "attention_hidden_size", "dropout",
                     "length", "strategy", "temperature", "beam_size")
LM_HPARAMS = ("embedding_size", "hidden_size", "layers", "dropout")


class _SpacyConfig(dict):
    """Stands in for the spaCy/thinc ``Config`` (a dict) of the tokenizer entry."""


_ALLOWED = {
    ("collections", "OrderedDict"): None,
    ("torch._utils", "_rebuild_tensor_v2"): None,
    ("torch._utils", "_rebuild_tensor"): None,
    ("torch._utils", "_rebuild_parameter"): None,
    ("torch", "Size"): None,
    ("_codecs", "encode"): None,  # how protocol 2 pickles bytes
    ("builtins", "bytes"): None,  # empty bytes under protocol 2
    ("builtins", "set"): None,
    ("builtins", "frozenset"): None,
    ("builtins", "bytearray"): None,
    ("thinc.config", "Config"): _SpacyConfig,
    ("confection", "Config"): _SpacyConfig,
    ("confection._config", "Config"): _SpacyConfig,  # spaCy >= 3.7 pickles it from there
}


class _NotAllowed(pickle.UnpicklingError):
    """An object off the allow-list (not a corrupt file)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        key = (module, name)
        if key not in _ALLOWED:
            raise _NotAllowed(
                f"{module}.{name} is not on cosy_bench's allow-list for MILAN checkpoints")
        stand_in = _ALLOWED[key]
        return stand_in if stand_in is not None else super().find_class(module, name)


class _TrustingUnpickler(pickle.Unpickler):
    """Any object (trust_checkpoint=true), but the spaCy config still as a plain dict, so
    that spaCy need not be installed."""

    def find_class(self, module: str, name: str):
        stand_in = _ALLOWED.get((module, name))
        return stand_in if stand_in is not None else super().find_class(module, name)


def _pickle_module(unpickler: type[pickle.Unpickler]) -> types.SimpleNamespace:
    return types.SimpleNamespace(Unpickler=unpickler,
                                 load=lambda f, **kw: unpickler(f, **kw).load(),
                                 __name__=f"cosy_bench_{unpickler.__name__}")


def read_published(path: str | Path, trust_checkpoint: bool = False) -> dict:
    """The dict of a published-format file (see the module docstring for what is trusted)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MILAN checkpoint not found: {path}: point model.milan_checkpoint "
                                "(or explainer.checkpoint) at the file")
    if trust_checkpoint:
        log.warning("unpickling %s without restrictions (explainer.trust_checkpoint=true)", path)
        return torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=_pickle_module(_TrustingUnpickler))
    try:
        return torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=_pickle_module(_RestrictedUnpickler))
    except _NotAllowed as err:
        raise ValueError(
            f"MILAN checkpoint {path} holds an object cosy_bench does not unpickle ({err}). "
            "If you trust the file, load it with explainer.trust_checkpoint=true.") from err
    except Exception as err:  # truncated or damaged: unpickling, zip or EOF errors
        raise ValueError(
            f"MILAN checkpoint {path} is damaged or not a checkpoint ({type(err).__name__}: "
            f"{err}); delete it so that it is downloaded again, or point "
            "model.milan_checkpoint (or explainer.checkpoint) at an intact file") from err


def _props(entry: object, what: str, source: str) -> dict:
    if not isinstance(entry, dict) or not isinstance(entry.get("properties"), dict):
        raise ValueError(f"MILAN checkpoint {source}: {what} is not a serialized object "
                         "(expected a dict with 'properties')")
    return entry["properties"]


def _vocabulary(indexer: object, what: str, source: str) -> Vocabulary:
    props = _props(indexer, what, source)
    tokens = _props(props.get("vocab"), f"{what}.vocab", source).get("tokens")
    if not isinstance(tokens, (tuple, list)) or not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"MILAN checkpoint {source}: {what}.vocab.tokens is not a list of words")
    missing = [k for k in ("start", "stop", "pad", "unk") if not props.get(k, False)]
    if missing:
        raise ValueError(f"MILAN checkpoint {source}: {what} has no {missing} tokens; this "
                         "suite reads indexers with start, stop, pad and unk")
    return Vocabulary(tokens)


def captioner_from_published(payload: dict, source: str = "checkpoint") -> Captioner:
    """Build the :class:`Captioner` a published-format dict describes and load its state
    dict strictly. Raises ValueError naming what does not fit."""
    if not isinstance(payload, dict) or not {"properties", "state_dict"} <= set(payload):
        raise ValueError(f"{source} is not a MILAN checkpoint: expected a dict with "
                         "'properties', 'children' and 'state_dict'")
    props = payload["properties"]
    kind = (payload.get("children") or {}).get("encoder")
    if kind != "PyramidConvEncoder":
        raise ValueError(f"MILAN checkpoint {source}: encoder {kind!r} is not supported "
                         "(this suite implements PyramidConvEncoder, used by every published "
                         "checkpoint)")
    vocab = _vocabulary(props.get("indexer"), "indexer", source)
    enc = dict(_props(props.get("encoder"), "encoder", source))
    config = enc.pop("config", None)
    if config not in BACKBONES:
        raise ValueError(f"MILAN checkpoint {source}: encoder config {config!r} is unknown; "
                         f"known: {sorted(BACKBONES)}")
    encoder = PyramidEncoder(config, **enc)
    lm = None
    if props.get("lm") is not None:
        lm_props = _props(props["lm"], "lm", source)
        lm_vocab = _vocabulary(lm_props.get("indexer"), "lm.indexer", source)
        if lm_vocab.words != vocab.words:
            raise ValueError(f"MILAN checkpoint {source}: the language model's vocabulary "
                             f"({len(lm_vocab.words)} words) differs from the captioner's "
                             f"({len(vocab.words)} words)")
        lm = LanguageModel(lm_vocab, **{k: lm_props[k] for k in LM_HPARAMS if k in lm_props})
    model = Captioner(vocab, encoder, lm,
                      **{k: props[k] for k in CAPTIONER_HPARAMS if k in props})
    load_strict(model, payload["state_dict"], source)
    return model.eval()


def load_strict(model: torch.nn.Module, state: dict, source: str) -> None:
    """``load_state_dict(strict=True)`` with one error listing every missing, unexpected and
    mis-shaped entry (a vocabulary that does not fit shows as mis-shaped embeddings)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"shapes differ ({len(shapes)}): " + "; ".join(shapes[:6]))
        if missing:
            parts.append(f"missing ({len(missing)}): {missing[:6]}")
        if unexpected:
            parts.append(f"unexpected ({len(unexpected)}): {unexpected[:6]}")
        vocab = getattr(model, "vocab", None)
        hint = (f" The checkpoint's hyperparameters or vocabulary do not fit the architecture "
                f"they describe (vocabulary here: {len(vocab)} entries)." if vocab else "")
        raise ValueError(f"MILAN checkpoint {source} does not load strictly: "
                         + " | ".join(parts) + "." + hint)
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def download(name: str) -> Path:
    """The cached file of published checkpoint ``name`` (downloaded once, atomically)."""
    url = PUBLISHED[name]
    target = default_cache_dir() / "milan" / Path(url).name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=120) as resp, open(tmp, "wb") as out:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(
            f"MILAN checkpoint {name!r} is not cached at {target} and could not be downloaded "
            f"from {url} ({err}). Download it elsewhere and pass model.milan_checkpoint="
            f"/path/milan-{name}.pth, or use model.milan_checkpoint=random offline (in a run "
            "of MILAN alone, explainer.checkpoint=... works too).") from err
    tmp.replace(target)
    return target


# ----------------------------------------------------------------------------- toy format


def architecture(model: Captioner) -> dict:
    """The hyperparameters and vocabulary that rebuild ``model`` (JSON-safe)."""
    arch = {"words": list(model.vocab.words), "encoder": model.encoder.config,
            **{k: getattr(model, k) for k in CAPTIONER_HPARAMS}}
    if model.lm is not None:
        arch["lm"] = {k: getattr(model.lm, k) for k in LM_HPARAMS}
    return arch


def build(arch: dict) -> Captioner:
    """A randomly initialised :class:`Captioner` of :func:`architecture`'s description."""
    vocab = Vocabulary(arch["words"])
    lm = LanguageModel(vocab, **arch["lm"]) if arch.get("lm") else None
    return Captioner(vocab, PyramidEncoder(arch["encoder"]), lm,
                     **{k: arch[k] for k in CAPTIONER_HPARAMS if k in arch})


def save_safetensors(model: Captioner, path: str | Path, metadata: dict | None = None,
                     dtype: torch.dtype = torch.float16) -> None:
    """The toy format: the state dict (floats as ``dtype``) and, in the header, the
    architecture as JSON. Written to a temporary file and renamed."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
             for k, v in model.state_dict().items()}
    meta = {"milan_architecture": json.dumps(architecture(model)),
            **{k: str(v) for k, v in (metadata or {}).items()}}
    tmp = path.with_suffix(".part")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)


def load_safetensors(path: str | Path) -> Captioner:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        hint = f" Train it with:\n  {TOY_TRAIN_COMMAND}" if path == TOY_CHECKPOINT else ""
        raise FileNotFoundError(f"MILAN checkpoint not found: {path}.{hint}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if "milan_architecture" not in meta:
            raise ValueError(f"{path} has no 'milan_architecture' entry: not a cosy_bench "
                             "MILAN file")
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    model = build(json.loads(meta["milan_architecture"]))
    load_strict(model, state, str(path))
    return model.eval()


def random_captioner(encoder: str = "resnet101", words=RANDOM_WORDS, seed: int = 0,
                     lm: bool = True) -> Captioner:
    """A seeded random captioner of the published sizes (embedding 128, hidden 512, LM of 2
    layers of 512) on ``encoder``; for offline smoke runs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        arch = {"words": list(words), "encoder": encoder, "embedding_size": 128,
                "hidden_size": 512, "dropout": 0.5, "length": 15, "temperature": 0.2,
                "beam_size": 50,
                "lm": {"embedding_size": 128, "hidden_size": 512, "layers": 2, "dropout": 0.5}
                if lm else None}
        return build(arch).eval()


def load_captioner(checkpoint: str, trust_checkpoint: bool = False, seed: int = 0,
                   encoder: str = "resnet101") -> Captioner:
    """``checkpoint``: a published name (:data:`PUBLISHED`), ``toyworld`` (the shipped toy
    decoder), ``random`` (published sizes, random weights), or a path (``.safetensors``: the
    toy format; anything else: the published format)."""
    if checkpoint == "random":
        return random_captioner(encoder=encoder, seed=seed)
    if checkpoint == "toyworld":
        return load_safetensors(TOY_CHECKPOINT)
    if checkpoint in PUBLISHED:
        path = download(checkpoint)
        return captioner_from_published(read_published(path, trust_checkpoint), str(path))
    path = Path(checkpoint).expanduser()
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    if not path.exists():
        raise FileNotFoundError(
            f"MILAN checkpoint {checkpoint!r} is neither a file nor a known name "
            f"({sorted(PUBLISHED)}, toyworld, random): set model.milan_checkpoint (or "
            "explainer.checkpoint) to one of them or to a file")
    return captioner_from_published(read_published(path, trust_checkpoint), str(path))


def main(argv=None) -> None:
    """``python -m cosy_bench.explainers.milan.checkpoints base``: fetch (once) and load a
    checkpoint strictly, print what it holds and decode one random exemplar set."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("checkpoint", nargs="?", default="base",
                    help=f"{sorted(PUBLISHED)}, toyworld, random, or a file")
    ap.add_argument("--trust-checkpoint", action="store_true")
    args = ap.parse_args(argv)
    model = load_captioner(args.checkpoint, trust_checkpoint=args.trust_checkpoint)
    arch = architecture(model)
    print(f"{args.checkpoint}: loaded strictly; encoder {arch['encoder']} "
          f"({model.feature_size} features), vocabulary {len(model.vocab.words)} words, "
          f"embedding {arch['embedding_size']}, hidden {arch['hidden_size']}, "
          f"LM {arch.get('lm')}, decoding: {model.strategy}, beam {model.beam_size}, "
          f"length {model.length}, temperature {model.temperature}")
    torch.manual_seed(0)
    size = 64 if arch["encoder"] == "toy_cnn" else 224
    with torch.no_grad():
        feats = model.encode(torch.rand(1, 15, 3, size, size),
                             (torch.rand(1, 15, 1, size, size) > 0.5).float())
        print("random exemplars ->", model.describe(feats, beam_size=5)[0])


if __name__ == "__main__":
    main()
