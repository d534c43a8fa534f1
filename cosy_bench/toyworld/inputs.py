"""The real-input keys the toy world's config nodes carry (``generator.model_id``,
``clip.pretrained``, ``dataset.root``, ...), and their refusal when set.

Hydra composes a ``-m`` sweep's base config from the defaults (``model=toy_cnn``, hence the
toy world) and applies every non-sweep override to it, so ``-m model=resnet18,vit_b16
generator.model_id=DIR`` needs the key in the toy world's nodes too. There they stay null;
a toy-world job that is given one (``model=toy_cnn`` in such a sweep) stops here.
"""

from __future__ import annotations


def refuse_real_inputs(owner: str, **given) -> None:
    """Raise ``ValueError`` when any of ``given`` (config key -> value) is set.

    ``owner``: the config group option, e.g. ``"generator=toyworld"``.
    """
    set_keys = {k: v for k, v in given.items() if v is not None}
    if set_keys:
        listed = ", ".join(f"{k}={v}" for k, v in set_keys.items())
        raise ValueError(
            f"{listed}: the toy world's {owner} reads no real input. This job composes the "
            "toy world (model=toy_cnn or world=toyworld); drop the override for it, or choose "
            "a real model/world (e.g. model=resnet18) for the real inputs")
