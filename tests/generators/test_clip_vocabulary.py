"""CLIP's real BPE vocabulary, made offline from open_clip's merges file, in the stand-in
diffusers pipeline and the shape-faithful SDXL/Stable Cascade builders (issue #19: "a tiny
SDXL pipeline in the hub layout with an fp16 variant and the real CLIP BPE vocabulary")."""

from __future__ import annotations

import json

import open_clip
import pytest
from transformers import CLIPTokenizer

from cosy_bench.bench import standins
from cosy_bench.generators.diffusers import (
    CLIP_BOS,
    CLIP_EOS,
    CLIP_VOCAB_SIZE,
    clip_bpe_tokenizer_files,
)
from cosy_bench.generators.faithful import SDXL_TEXT_2, _text_config

PROMPTS = ["a photo of a pomegranate", "Red objects, écrans & dogs!", "tench, Tinca tinca",
           "a realistic photo of a close up of a Chihuahua", "night sky over snow-covered brick"]


def _ids(tokenizer: CLIPTokenizer, prompt: str) -> list[int]:
    return tokenizer(prompt, padding="max_length", max_length=77).input_ids


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip-bpe")
    clip_bpe_tokenizer_files(folder)
    return folder


def test_the_vocabulary_splits_prompts_as_open_clips_tokenizer(files):
    vocab = json.loads((files / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == CLIP_VOCAB_SIZE
    assert vocab["<|startoftext|>"] == CLIP_BOS and vocab["<|endoftext|>"] == CLIP_EOS
    assert vocab["a</w>"] == 320 and vocab["photo</w>"] == 1125  # ids of the published vocab
    tok = CLIPTokenizer(str(files / "vocab.json"), str(files / "merges.txt"),
                        model_max_length=77)
    for prompt in PROMPTS:
        ours = _ids(tok, prompt)
        theirs = [t for t in open_clip.tokenize([prompt])[0].tolist() if t]
        assert ours[:len(theirs)] == theirs, prompt
        assert set(ours[len(theirs):]) <= {CLIP_EOS}  # padded with the end token, as SD's


def test_the_stand_in_pipeline_saves_the_real_vocabulary_in_the_hub_layout(tmp_path, files):
    folder = standins.diffusers_pipeline(tmp_path / "sdxl-tiny", sample_size=8)
    loaded = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    reference = CLIPTokenizer(str(files / "vocab.json"), str(files / "merges.txt"),
                              model_max_length=77)
    assert [_ids(loaded, p) for p in PROMPTS] == [_ids(reference, p) for p in PROMPTS]
    config = json.loads((folder / "text_encoder" / "config.json").read_text())
    assert config["vocab_size"] == CLIP_VOCAB_SIZE
    assert (config["bos_token_id"], config["eos_token_id"]) == (CLIP_BOS, CLIP_EOS)
    assert list((folder / "unet").glob("*.fp16.safetensors"))  # the fp16 variant


def test_the_shape_faithful_text_encoders_use_clips_token_ids():
    cfg = _text_config(SDXL_TEXT_2, 16)
    assert (cfg["vocab_size"], cfg["bos_token_id"], cfg["eos_token_id"]) == \
        (CLIP_VOCAB_SIZE, CLIP_BOS, CLIP_EOS)
