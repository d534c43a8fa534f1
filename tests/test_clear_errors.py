"""Errors that name the input and the fix (issue 22, item 5): the toy CLIP's file given as
``model.weights``, a Latin-1 concept list, a folder where no image can be read (a full disk:
tests/cache/test_binding.py)."""

from __future__ import annotations

import pytest

from cosy_bench.explainers.concept_sets import text_file
from cosy_bench.toyworld.clip import WEIGHTS_PATH
from cosy_bench.toyworld.model import load_toy_cnn


def test_the_toy_clip_file_as_model_weights_says_what_it_is():
    with pytest.raises(ValueError) as err:
        load_toy_cnn(str(WEIGHTS_PATH))
    text = str(err.value)
    assert "model.weights=" in text and "toy CLIP's weights file" in text and "toy_cnn" in text


def test_a_state_dict_of_another_model_names_the_file(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"other.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ValueError, match="holds no toy CNN state dict") as err:
        load_toy_cnn(str(path))
    assert str(path) in str(err.value) and "unexpected ['other.weight']" in str(err.value)


def test_a_latin1_concept_list_names_the_file_and_says_save_it_as_utf8(tmp_path):
    path = tmp_path / "concepts.txt"
    path.write_bytes("caf\u00e9\nna\u00efve\n".encode("latin-1"))
    with pytest.raises(ValueError) as err:
        text_file(str(path))
    text = str(err.value)
    assert str(path) in text and "not UTF-8" in text and "save it as UTF-8" in text
    # the run's group, as typed on the command line (not the explainer's interpolated copy)
    assert text.startswith("concepts.path: ") and "explainer.concepts.path" not in text


def test_a_folder_where_no_image_can_be_read_is_named(compose, tmp_path):
    import lightning as L

    from cosy_bench.data.datasets import ImageFolder
    from cosy_bench.loops.activations import collect_activations
    from cosy_bench.models import create_model

    folder = tmp_path / "broken"
    folder.mkdir()
    for i in range(3):
        (folder / f"img{i}.png").write_bytes(b"not a png at all")
    cfg = compose(["logger=none", f"paths.cache_dir={tmp_path / 'cache'}"])
    model = create_model(cfg.model, seed=0)
    from cosy_bench.models.layers import LayerExtractor

    extractor = LayerExtractor(model.module, model.layer(cfg.layer.name))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError) as err:
        collect_activations(extractor, ImageFolder(str(folder)), model.transform, trainer,
                            batch_size=2)
    text = str(err.value)
    assert f"the folder {folder}" in text and "3 files" in text and "dataset.root" in text
