"""Real inputs in their real formats (issue #19, items 2-4): weights files (.pth and
.safetensors), CLIP built with the activation its weights were trained with, ImageNet
probe folders holding a subset of the classes."""

from __future__ import annotations

import pytest
import torch
from helpers import CONF
from omegaconf import OmegaConf
from PIL import Image

from cosy_bench.app.inputs import check_torchvision
from cosy_bench.data.probe import LabelledImageFolder, imagenet_wnids, probe_concepts
from cosy_bench.models.loaders import WeightsUnavailableError, torchvision_model


@pytest.fixture(scope="module")
def resnet18_state():
    torch.manual_seed(3)
    from torchvision.models import resnet18

    return resnet18(weights=None).state_dict()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_weights_file_loads_in_either_format(tmp_path, resnet18_state, suffix):
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(resnet18_state, str(path))
    else:
        torch.save(resnet18_state, path)
    node = OmegaConf.create({"arch": "resnet18", "weights": str(path)})
    assert check_torchvision(node, "model.build") == []
    model = torchvision_model("resnet18", str(path))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, resnet18_state[name]), name


def test_a_weights_file_of_another_format_is_refused_with_the_working_ones(tmp_path):
    path = tmp_path / "resnet18.ckpt"
    path.write_bytes(b"not weights")
    node = OmegaConf.create({"arch": "resnet18", "weights": str(path)})
    (missing,) = check_torchvision(node, "model.build")
    assert ".safetensors" in missing.fix and ".pth" in missing.fix
    with pytest.raises(WeightsUnavailableError, match=r"\.safetensors"):
        torchvision_model("resnet18", str(path))


CLIP_YAMLS = sorted(p for p in (CONF / "clip").glob("*.yaml")
                    if OmegaConf.load(p).get("_target_", "").endswith("open_clip_model"))


@pytest.mark.parametrize("path", CLIP_YAMLS, ids=[p.stem for p in CLIP_YAMLS])
def test_every_clip_yaml_builds_the_activation_its_weights_were_trained_with(path):
    import open_clip

    from cosy_bench.models.clip import uses_quick_gelu

    node = OmegaConf.load(path)
    name = node.get("model_name")
    if name in (None, "???"):
        pytest.skip("the model/pretrained pair is given on the command line")
    tag, forced = node.get("pretrained"), node.get("quick_gelu")
    table = open_clip.get_pretrained_cfg(name, tag) if tag and tag != "???" else {}
    expected = bool((table or {}).get("quick_gelu")) or bool(
        (open_clip.get_model_config(name) or {}).get("quick_gelu"))
    assert uses_quick_gelu(name, tag, forced) is expected
    # the same with a local file of those weights (no tag to look up): the yaml says it
    assert uses_quick_gelu(name, "/weights/clip.pt", forced) is expected
    model = open_clip.create_model(name, pretrained=None,
                                   force_quick_gelu=uses_quick_gelu(name, tag, forced))
    acts = {type(m).__name__ for m in model.modules()} & {"QuickGELU", "GELU"}
    assert acts == ({"QuickGELU"} if expected else {"GELU"})


def test_vit_b16_openai_builds_quick_gelu():
    node = OmegaConf.load(CONF / "clip" / "vit_b16_openai.yaml")
    from cosy_bench.models.clip import uses_quick_gelu

    assert uses_quick_gelu(node.model_name, node.pretrained, node.quick_gelu)


def test_the_pretrained_table_overrules_quick_gelu_for_a_tag(caplog):
    """``clip=vit_b16_openai clip.pretrained=<a LAION tag>``: the yaml's ``quick_gelu: true``
    (meant for a local file of OpenAI's weights) does not turn the LAION weights' GELU into
    QuickGELU; a local file still follows the setting."""
    from cosy_bench.models.clip import uses_quick_gelu

    with caplog.at_level("WARNING", logger="cosy_bench"):
        assert uses_quick_gelu("ViT-B-16", "laion2b_s34b_b88k", True) is False
    assert "quick_gelu=True ignored" in caplog.text
    assert uses_quick_gelu("ViT-B-16", "openai", False) is True
    assert uses_quick_gelu("ViT-B-16", "/weights/clip.pt", True) is True
    assert uses_quick_gelu("ViT-B-16", "/weights/clip.pt", None) is False


def _folder(root, names):
    for name in names:
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(root / name / "a.JPEG")


class _Model:
    name = "resnet18"

    def __init__(self):
        from cosy_bench.models.classes import torchvision_categories

        self.class_names = torchvision_categories("ResNet18_Weights.IMAGENET1K_V1")


def test_a_subset_of_imagenet_classes_is_named_by_wnid(tmp_path):
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and wnids[0] == "n01440764" and wnids == sorted(wnids)
    _folder(tmp_path, ["n02085620", "n01443537"])  # Chihuahua, goldfish
    probe = LabelledImageFolder(str(tmp_path), names_from_model=True)
    assert probe_concepts(probe, _Model()) == ["goldfish", "Chihuahua"]


def test_an_unknown_wnid_is_an_error_naming_the_folder(tmp_path):
    _folder(tmp_path, ["n01440764", "n99999999"])
    with pytest.raises(ValueError, match=r"n99999999.*not named by an ImageNet-1k wnid"):
        LabelledImageFolder(str(tmp_path), names_from_model=True)
    assert LabelledImageFolder(str(tmp_path)).concepts == ["n01440764", "n99999999"]
