"""Progress bars are named for their pass, not Lightning's "Predicting" (issue #13)."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from cosy_bench.loops.progress import NamedRichProgressBar, NamedTQDMProgressBar, progress_bar


class _Double(L.LightningModule):
    def predict_step(self, batch, batch_idx):
        return batch * 2


def test_the_bar_reads_the_pass_name():
    for bar in (progress_bar("synthesis"), NamedTQDMProgressBar("exemplars"),
                NamedRichProgressBar("control activations")):
        assert bar.predict_description in ("synthesis", "exemplars", "control activations")
        assert bar.predict_description != "Predicting"


def test_a_predict_loop_runs_with_a_named_bar():
    bar = NamedTQDMProgressBar("concept activations")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[bar],
                        enable_checkpointing=False, enable_model_summary=False)
    out = trainer.predict(_Double(), DataLoader(torch.arange(4.0), batch_size=2))
    assert torch.cat(out).tolist() == [0.0, 2.0, 4.0, 6.0]
    assert trainer.progress_bar_callback is bar
    assert bar.predict_progress_bar.desc.startswith("concept activations")
