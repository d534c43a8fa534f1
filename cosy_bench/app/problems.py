"""What is wrong with a run's inputs: :class:`Missing` (one input, what is wrong and the
fix) and :class:`MissingInputsError` (all of them, in one message). Shared by the input
checks (``inputs``: files, folders, downloads; ``shapes``: layer, neurons, control size)."""

from __future__ import annotations

from dataclasses import dataclass

from cosy_bench.app.failures import UserInputError

OFFLINE = ("offline trial of the whole pipeline: add debug=smoke (random weights, tiny "
           "generator, synthetic data); the toy world with this model: world=toyworld")


@dataclass(frozen=True)
class Missing:
    """One missing input: ``what`` it is and why it is missing, ``fix`` how to supply it."""

    what: str
    fix: str
    offline: bool = False  # missing for want of a network or of a data folder

    def __str__(self) -> str:
        return f"{self.what}\n      fix: {self.fix}"


class MissingInputsError(UserInputError):
    """The run's inputs that are missing, each with how to supply it."""

    def __init__(self, missing: list[Missing]):
        self.missing = missing
        lines = [f"{len(missing)} input(s) of this run are missing or wrong (nothing was computed):"]
        lines += [f"  - {m}" for m in missing]
        if any(m.offline for m in missing):
            lines.append(f"  ({OFFLINE})")
        super().__init__("\n".join(lines))
