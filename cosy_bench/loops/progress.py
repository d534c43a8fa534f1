"""Progress bars named for their pass ("control activations", "synthesis", "exemplars"...)
instead of Lightning's "Predicting"."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar


def _named(base: type) -> type:
    class Named(base):
        def __init__(self, name: str):
            super().__init__()
            self._name = name

        @property
        def predict_description(self) -> str:
            return self._name

    Named.__name__ = Named.__qualname__ = f"Named{base.__name__}"
    return Named


NamedRichProgressBar = _named(RichProgressBar)
NamedTQDMProgressBar = _named(TQDMProgressBar)


def progress_bar(name: str):
    """Lightning's own choice of bar (rich when installed, else tqdm), reading ``name``."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return NamedTQDMProgressBar(name)
    return NamedRichProgressBar(name)
