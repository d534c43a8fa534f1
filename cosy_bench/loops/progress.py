"""Progress bars named for their pass ("control activations", "synthesis", "exemplars"...)
instead of Lightning's "Predicting"; :class:`StageBar`: one bar for a stage made of several
predict loops."""

from __future__ import annotations

from collections.abc import Callable

from lightning.pytorch.callbacks import Callback, RichProgressBar, TQDMProgressBar


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


class StageBar(Callback):
    """One bar for a stage that runs several predict loops (synthesis claimed concept by
    concept, one activation pass per concept): ``name``, done/total ``unit`` (images,
    concepts), elapsed and remaining time. Opened at the first :meth:`advance` or batch,
    with ``total`` then known; closed by :meth:`close` (or leaving the ``with`` block).

    As a Lightning callback (``per_batch=True``) it advances by each predict batch's length
    (a synthesis batch: its work items) times the number of ranks. ``enabled=False`` (rank
    > 0, ``trainer.enable_progress_bar: false``) shows nothing."""

    def __init__(self, name: str, unit: str, total: Callable[[], int] | int,
                 enabled: bool = True, per_batch: bool = False):
        super().__init__()
        self.name, self.unit, self.enabled, self.per_batch = name, unit, enabled, per_batch
        self._total = total
        self._progress, self._task, self.done = None, None, 0

    def _open(self) -> None:
        if self._progress is not None or not self.enabled:
            return
        total = self._total() if callable(self._total) else self._total
        try:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
        except ImportError:  # rich is optional: no bar then (the log lines still count)
            self.enabled = False
            return

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn(self.unit),
                                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
        self._task = self._progress.add_task(self.name, total=total)
        self._progress.start()

    def advance(self, k: int = 1) -> None:
        self.done += k
        self._open()
        if self._progress is not None:
            self._progress.advance(self._task, k)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                             dataloader_idx: int = 0) -> None:
        if self.per_batch:
            self.advance(len(batch) * max(1, trainer.world_size))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> StageBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
