"""A tiny CLIP for the toy world, built and loaded through open_clip's own factory.

The architecture is an ordinary open_clip model config, ``clip_config/toyworld-clip.json``,
registered with :func:`open_clip.add_model_config` when this module is imported, so
``open_clip.create_model_and_transforms("toyworld-clip", ...)`` and
``open_clip.get_tokenizer("toyworld-clip")`` work like for any built-in model. The text
tower uses open_clip's standard BPE tokenizer (49,408 tokens), so any English text can be
embedded; the model is trained by :mod:`cosy_bench.toyworld.training.clip`.

Shipped weights: compact file, full checkpoint materialised on first use
-----------------------------------------------------------------------
The model is small (ModifiedResNet vision tower of width 8: 0.36 M parameters; text
transformer of width 64 with 3 layers: 0.16 M), but a full checkpoint is dominated by the
token-embedding matrix of the standard vocabulary (49,408 x 64 = 3.16 M floats; the float32
checkpoint is 14.8 MB), although the toy captions use only 185 of its rows. Training therefore
initialises every row of ``token_embedding.weight`` that no caption can contain to exactly
zero; those rows never receive a gradient (and are excluded from weight decay), so they are
still zero after training. The shipped file ``weights/toy_clip.safetensors`` (1.1 MB) stores

* ``token_embedding.rows`` (int64 ``[k]``) and ``token_embedding.values`` (``[k, width]``):
  the non-zero rows only;
* every other tensor of the state dict unchanged in name and shape;

all floating-point tensors in float16 (training runs in float32; the metrics in
``weights/toy_clip.json`` are measured on the float16 file as loaded). Its safetensors
metadata holds the model config it was trained with and the image normalisation.

:func:`materialise_checkpoint` expands that file into an ordinary float32 open_clip state
dict (zeros in the unused rows) in the cache folder, named by the hash of the compact file and
written atomically (temporary file, then ``os.replace``), and :func:`load_toy_clip` hands its
path to ``open_clip.create_model_and_transforms(TOY_CLIP_NAME, pretrained=path,
image_mean=..., image_std=...)``: open_clip attaches no preprocessing config to a checkpoint
given as a file path, so the normalisation (:data:`TOY_CLIP_MEAN`, :data:`TOY_CLIP_STD`, the
toy CNN's) is passed explicitly and ends up in ``model.visual.preprocess_cfg``.

Consequence of the zero rows: a token outside the toy captions' vocabulary embeds as the zero
vector, so texts that differ only in such tokens (``"dog"`` and ``"cat"``) get the same text
embedding. Use :func:`unknown_tokens` to check that a concept set only uses trained tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors import safe_open
from torch import Tensor, nn

from cosy_bench.cache.checked import load_tensors_checked
from cosy_bench.cache.store import default_cache_dir, save_tensors_atomic
from cosy_bench.toyworld.inputs import refuse_real_inputs
from cosy_bench.toyworld.vocab import CONCEPT_INDEX, CONCEPTS, FAMILIES

#: Name of the registered open_clip model config.
TOY_CLIP_NAME = "toyworld-clip"
#: Folder with the open_clip model config JSON (registered at import).
CONFIG_DIR = Path(__file__).resolve().parent / "clip_config"
CONFIG_PATH = CONFIG_DIR / f"{TOY_CLIP_NAME}.json"
#: The shipped compact weights and their evaluation (written by ``train_clip``).
WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "toy_clip.safetensors"
METRICS_PATH = WEIGHTS_PATH.with_suffix(".json")
#: Image normalisation of the toy CLIP (per channel, images scaled to [0, 1] first).
TOY_CLIP_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
TOY_CLIP_STD: tuple[float, float, float] = (0.25, 0.25, 0.25)

COMPACT_FORMAT = "cosy_bench.toy_clip.compact.v1"
_ROWS_KEY = "token_embedding.rows"
_VALUES_KEY = "token_embedding.values"
_EMBEDDING_KEY = "token_embedding.weight"


def register_config() -> None:
    """Register ``clip_config/`` with open_clip (idempotent)."""
    if TOY_CLIP_NAME not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


register_config()


def model_config() -> dict:
    """The registered open_clip config of :data:`TOY_CLIP_NAME` (a fresh copy)."""
    return open_clip.get_model_config(TOY_CLIP_NAME)


# ----------------------------------------------------------------------------- weights files


def save_compact(model: nn.Module, path: str | os.PathLike,
                 metadata: dict[str, str] | None = None) -> Path:
    """Write ``model``'s weights as a compact file (see the module docstring), atomically.

    Args:
        model: an open_clip ``CLIP`` built from :data:`TOY_CLIP_NAME`.
        path: target ``.safetensors`` file.
        metadata: extra string entries for the safetensors header (seed, steps, ...).

    Returns:
        ``path`` as a :class:`Path`.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    embedding = state.pop(_EMBEDDING_KEY)
    rows = torch.nonzero(embedding.abs().sum(dim=1) > 0).flatten()
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    tensors[_ROWS_KEY] = rows.to(torch.int64)
    tensors[_VALUES_KEY] = embedding[rows].half()
    meta = {
        "format": COMPACT_FORMAT,
        "model_name": TOY_CLIP_NAME,
        "vocab_size": str(embedding.shape[0]),
        "model_config": json.dumps(model_config(), sort_keys=True),
        "image_mean": json.dumps(list(TOY_CLIP_MEAN)),
        "image_std": json.dumps(list(TOY_CLIP_STD)),
        **(metadata or {}),
    }
    path = Path(path)
    save_tensors_atomic(path, tensors, metadata=meta)
    return path


def read_compact_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors metadata of a compact file; raises ValueError for other files."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != COMPACT_FORMAT:
        raise ValueError(f"{path} is not a compact toy-CLIP file (format "
                         f"{meta.get('format')!r}, expected {COMPACT_FORMAT!r})")
    return meta


def expand_compact(path: str | os.PathLike) -> dict[str, Tensor]:
    """The full float32 open_clip state dict stored in a compact file."""
    meta = read_compact_metadata(path)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    rows, values = tensors.pop(_ROWS_KEY), tensors.pop(_VALUES_KEY)
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    embedding = torch.zeros(int(meta["vocab_size"]), values.shape[1], dtype=torch.float32)
    embedding[rows] = values.float()
    state[_EMBEDDING_KEY] = embedding
    return state


def _file_hash(path: Path, length: int = 16) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def _check_expanded(tensors: dict[str, Tensor]) -> None:
    """An expanded checkpoint holds the full embedding, not the compact file's rows."""
    if _EMBEDDING_KEY not in tensors or _ROWS_KEY in tensors:
        raise ValueError(f"not an expanded toy-CLIP checkpoint (no {_EMBEDDING_KEY!r})")


def materialise_checkpoint(weights: str | os.PathLike | None = None,
                           cache_dir: str | os.PathLike | None = None) -> Path:
    """Expand a compact file into a full open_clip checkpoint in the cache (once).

    Args:
        weights: compact file; default the shipped :data:`WEIGHTS_PATH`.
        cache_dir: cache root; default ``cosy_bench.cache.store.default_cache_dir()``
            (``$COSY_CACHE_DIR`` or ``~/.cache/cosy_bench``). The checkpoint goes to
            ``<cache_dir>/toy_clip/toyworld-clip-<sha256 of the compact file>.safetensors``.

    Returns:
        Path of the float32 checkpoint, written atomically with its checksum if it was
        missing. An existing one is verified first (``cache.checked``): one that does not
        verify (truncated, zeroed, edited) is moved aside with a warning naming it, and
        rebuilt.
    """
    weights = Path(weights) if weights is not None else WEIGHTS_PATH
    if not weights.is_file():
        raise FileNotFoundError(f"toy CLIP weights not found: {weights}; train them with "
                                "`python -m cosy_bench.toyworld.training.clip`")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / "toy_clip" / f"{TOY_CLIP_NAME}-{_file_hash(weights)}.safetensors"
    if load_tensors_checked(target, check=_check_expanded) is None:  # missing or moved aside
        save_tensors_atomic(target, expand_compact(weights))
    return target


def load_toy_clip(device: str | torch.device = "cpu", cache_dir: str | os.PathLike | None = None,
                  weights: str | os.PathLike | None = None, pretrained: str | None = None,
                  ) -> tuple[nn.Module, Callable, Callable]:
    """Load the toy CLIP through ``open_clip.create_model_and_transforms``.

    Args:
        device: where to put the model.
        cache_dir: cache root for the materialised checkpoint (see
            :func:`materialise_checkpoint`).
        weights: a compact weights file; default the shipped one.
        pretrained: null (open_clip's key of ``clip.pretrained``, see
            :mod:`cosy_bench.toyworld.inputs`).

    Returns:
        ``(model, preprocess, tokenizer)``: the open_clip model in eval mode, the validation
        transform (PIL image -> normalised tensor ``[3, 64, 64]``) and the tokenizer
        (``tokenizer(list_of_str) -> LongTensor [n, context_length]``).
    """
    refuse_real_inputs("clip=toyworld", **{"clip.pretrained": pretrained})
    meta = read_compact_metadata(weights if weights is not None else WEIGHTS_PATH)
    trained_cfg = json.loads(meta["model_config"])
    if trained_cfg != model_config():
        raise ValueError(f"{weights or WEIGHTS_PATH} was trained with a different model config "
                         f"than {CONFIG_PATH}; retrain or restore the config")
    checkpoint = materialise_checkpoint(weights, cache_dir)
    model, _, preprocess = open_clip.create_model_and_transforms(
        TOY_CLIP_NAME,
        pretrained=str(checkpoint),
        device=device,
        image_mean=tuple(json.loads(meta["image_mean"])),
        image_std=tuple(json.loads(meta["image_std"])),
    )
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(TOY_CLIP_NAME)


# ----------------------------------------------------------------------------- encoding


def known_token_ids(model: nn.Module) -> set[int]:
    """Token ids whose embedding row is non-zero, i.e. tokens seen in training."""
    rows = model.token_embedding.weight.detach().abs().sum(dim=1) > 0
    return set(torch.nonzero(rows).flatten().tolist())


def unknown_tokens(model: nn.Module, tokenizer: Callable, texts: Sequence[str]) -> list[str]:
    """The texts containing a token the toy CLIP never saw in training (embedded as zero)."""
    known = known_token_ids(model)
    tokens = tokenizer(list(texts))
    return [t for t, row in zip(texts, tokens.tolist(), strict=True)
            if any(i != 0 and i not in known for i in row)]


def images_to_tensor(images: np.ndarray | Tensor, model: nn.Module) -> Tensor:
    """uint8 images ``[n, H, W, 3]`` -> normalised float ``[n, 3, S, S]`` as the model expects.

    Equivalent to applying the ``preprocess`` transform of :func:`load_toy_clip` to each image
    (same mean / std from ``model.visual.preprocess_cfg``); images of another size than the
    model's are resized bicubically.
    """
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [n, H, W, 3], got {x.dtype} {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    size = model.visual.image_size
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    if tuple(x.shape[-2:]) != size:
        x = nn.functional.interpolate(x, size=size, mode="bicubic", align_corners=False,
                                      antialias=True).clamp_(0, 1)
    cfg = model.visual.preprocess_cfg
    mean = torch.tensor(cfg["mean"], dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def encode_images(model: nn.Module, images: np.ndarray | Tensor, batch_size: int = 256) -> Tensor:
    """L2-normalised image embeddings ``[n, embed_dim]`` (float32, on CPU) of uint8 images."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        x = images_to_tensor(images[start:start + batch_size], model).to(device)
        out.append(model.encode_image(x, normalize=True).float().cpu())
    return torch.cat(out) if out else torch.empty(0, model.text_projection.shape[1])


@torch.no_grad()
def encode_texts(model: nn.Module, tokenizer: Callable, texts: Sequence[str]) -> Tensor:
    """L2-normalised text embeddings ``[n, embed_dim]`` (float32, on CPU); texts used as-is."""
    device = next(model.parameters()).device
    tokens = tokenizer(list(texts)).to(device)
    return model.encode_text(tokens, normalize=True).float().cpu()


def zero_shot_accuracy(model: nn.Module, tokenizer: Callable, images: np.ndarray | Tensor,
                       targets: Sequence[int] | np.ndarray, class_texts: Sequence[str]) -> float:
    """Prompt-free zero-shot accuracy: predict ``argmax_c <image, text_c>`` over bare texts.

    Args:
        model, tokenizer: from :func:`load_toy_clip`.
        images: uint8 ``[n, H, W, 3]``.
        targets: ``[n]`` indices into ``class_texts``.
        class_texts: the class texts, embedded without any template (e.g. ``["red", "blue"]``).

    Returns:
        Fraction of images whose most similar text is their target (nan for no images).
    """
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) == 0:
        return float("nan")
    sims = encode_images(model, images) @ encode_texts(model, tokenizer, class_texts).T
    return float((sims.argmax(dim=1).numpy() == targets).mean())


def auroc_columns(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of every column of ``scores`` [n, k] against bool ``labels`` [n, k].

    Ties count one half (as ``sklearn.metrics.roc_auc_score``); nan where a column has only
    one class.
    """
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    ranks = rankdata(scores, axis=0)
    n_pos = labels.sum(axis=0)
    n_neg = labels.shape[0] - n_pos
    u = (ranks * labels).sum(axis=0) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


# ----------------------------------------------------------------------------- evaluation


def family_targets(renders: Sequence) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Zero-shot targets per concept family from rendered scenes (``render.Rendered``).

    Colour, shape and pattern are those of the main object (``spec.objects[0]``, the largest,
    drawn on top); background is the scene's background. Scenes without a family member
    (a solid main object, a plain background) are left out of that family.

    Returns:
        ``{family: (scene_indices, target_indices_into_FAMILIES[family])}``.
    """
    out: dict[str, tuple[list[int], list[int]]] = {f: ([], []) for f in FAMILIES}
    for i, r in enumerate(renders):
        main = r.spec.main
        values = {"colour": main.colour, "shape": main.shape, "pattern": main.pattern,
                  "background": r.spec.background}
        for family, members in FAMILIES.items():
            if values[family] in members:
                out[family][0].append(i)
                out[family][1].append(members.index(values[family]))
    return {f: (np.asarray(idx, dtype=np.int64), np.asarray(tgt, dtype=np.int64))
            for f, (idx, tgt) in out.items()}


def evaluate(model: nn.Module, tokenizer: Callable, n: int = 1000, seed: int = 12345,
             ) -> dict:
    """Zero-shot accuracy per family and per-concept AUROC on ``n`` fresh random scenes.

    Concept texts are the bare concept names of ``vocab.CONCEPTS`` (as CLIP-Dissect uses them).

    Returns:
        ``{"n_images", "seed", "zero_shot": {family: acc}, "zero_shot_n": {family: count},
        "zero_shot_mean", "auroc": {concept: auc}, "auroc_mean", "auroc_min"}``.
    """
    from cosy_bench.toyworld.render import render_scene

    renders = [render_scene(seed, i, with_masks=False) for i in range(n)]
    images = np.stack([r.image for r in renders])
    labels = np.stack([r.labels for r in renders])
    image_emb = encode_images(model, images)
    text_emb = encode_texts(model, tokenizer, CONCEPTS)
    sims = (image_emb @ text_emb.T).numpy()
    zero_shot, counts = {}, {}
    for family, (idx, tgt) in family_targets(renders).items():
        columns = [CONCEPT_INDEX[c] for c in FAMILIES[family]]
        pred = sims[idx][:, columns].argmax(axis=1)
        zero_shot[family] = float((pred == tgt).mean()) if len(idx) else float("nan")
        counts[family] = int(len(idx))
    auroc = auroc_columns(sims, labels)
    return {
        "n_images": n,
        "seed": seed,
        "zero_shot": zero_shot,
        "zero_shot_n": counts,
        "zero_shot_mean": float(np.mean(list(zero_shot.values()))),
        "auroc": {c: float(a) for c, a in zip(CONCEPTS, auroc, strict=True)},
        "auroc_mean": float(np.nanmean(auroc)),
        "auroc_min": float(np.nanmin(auroc)),
    }
