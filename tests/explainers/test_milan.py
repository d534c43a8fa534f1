"""MILAN: architecture, published-format checkpoints, decoding, the toy training command."""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
import types

import pytest
import torch

from cosy_bench.explainers.milan import checkpoints as mc
from cosy_bench.explainers.milan.model import (
    Captioner,
    LanguageModel,
    PyramidEncoder,
    Vocabulary,
    pmi_scores,
)


def small_captioner(words=("red", "circles", "objects", "stripes"), seed=0, lm=True):
    torch.manual_seed(seed)
    vocab = Vocabulary(words)
    return Captioner(vocab, PyramidEncoder("toy_cnn"),
                     LanguageModel(vocab, 16, 32, 2, 0.0) if lm else None,
                     embedding_size=16, hidden_size=32, dropout=0.0, length=6,
                     beam_size=10).eval()


# ---------------------------------------------------------------- the published format

class _WriterConfig(dict):
    """What spaCy's tokenizer config pickles as: a dict subclass of another package, with
    instance state (so its pickle takes the NEWOBJ + SETITEMS + BUILD path)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_interpolated = True
        self.section_order = ["nlp", "components"]


def _indexer(words, config_module):
    _WriterConfig.__module__, _WriterConfig.__qualname__ = config_module, "Config"
    nlp = (_WriterConfig({"nlp": {"lang": "en", "pipeline": []}}), b"\x00spacy-bytes")
    return {"properties": {
        "vocab": {"properties": {"tokens": tuple(words)}, "children": {}},
        "tokenize": {"properties": {"nlp": nlp, "lemmatize": False, "lowercase": True,
                                    "ignore_stop": False, "ignore_punct": False},
                     "children": {}},
        "start": True, "stop": True, "pad": True, "unk": True, "length": None},
        "children": {}}


def write_published(path, model: Captioner, words=None, lm_words=None, config_module="confection",
                    extra_props=None, state=None):
    """A file laid out as the authors' ``SerializableModule.save`` writes it."""
    words = list(words or model.vocab.words)
    mod_name = config_module
    module = types.ModuleType(mod_name)
    module.Config = _WriterConfig
    parent = mod_name.split(".")[0]
    added = [m for m in {mod_name, parent} if m not in sys.modules]
    sys.modules[mod_name] = module
    if parent != mod_name:
        sys.modules.setdefault(parent, types.ModuleType(parent))
    try:
        props = {
            "indexer": _indexer(words, config_module),
            "encoder": {"properties": {"config": model.encoder.config, "pretrained": True},
                        "children": {}},
            "lm": {"properties": {"indexer": _indexer(lm_words or words, config_module),
                                  "embedding_size": model.lm.embedding_size,
                                  "hidden_size": model.lm.hidden_size,
                                  "layers": model.lm.layers, "dropout": model.lm.dropout},
                   "children": {}},
            "embedding_size": model.embedding_size, "hidden_size": model.hidden_size,
            "attention_hidden_size": None, "dropout": model.dropout, "length": model.length,
            "strategy": "rerank", "temperature": 0.2, "beam_size": model.beam_size,
            **(extra_props or {}),
        }
        torch.save({"properties": props, "children": {"encoder": "PyramidConvEncoder"},
                    "state_dict": state if state is not None else model.state_dict()}, path)
    finally:
        for m in added:
            sys.modules.pop(m, None)


@pytest.mark.parametrize("config_module", ["confection", "confection._config", "thinc.config"])
def test_a_published_format_checkpoint_loads_strictly_and_decodes(tmp_path, config_module):
    source = small_captioner()
    path = tmp_path / "milan-test.pth"
    write_published(path, source, config_module=config_module)
    loaded = mc.load_captioner(str(path))
    assert loaded.vocab.words == source.vocab.words
    assert loaded.lm is not None and loaded.strategy == "rerank"
    assert (loaded.hidden_size, loaded.embedding_size, loaded.beam_size) == (32, 16, 10)
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    images = torch.rand(2, 4, 3, 64, 64)
    masks = (torch.rand(2, 4, 1, 64, 64) > 0.5).float()
    feats = loaded.encode(images, masks)
    assert feats.shape == (2, 4, 320)
    got, want = loaded.describe(feats), source.describe(source.encode(images, masks))
    assert [d["description"] for d in got] == [d["description"] for d in want]
    assert all(d["description"] and set(d["description"].split()) <= set(source.vocab.words)
               for d in got)


def test_the_loader_rejects_a_vocabulary_that_does_not_fit(tmp_path):
    source = small_captioner()
    path = tmp_path / "bad-vocab.pth"
    write_published(path, source, words=[*source.vocab.words, "extra"],
                    lm_words=[*source.vocab.words, "extra"])
    with pytest.raises(ValueError, match=r"does not load strictly.*embedding\.weight.*vocabulary"):
        mc.load_captioner(str(path))


def test_the_loader_rejects_wrong_sizes_and_mismatched_lm_vocabularies(tmp_path):
    source = small_captioner()
    path = tmp_path / "bad-size.pth"
    write_published(path, source, extra_props={"hidden_size": 64})
    with pytest.raises(ValueError, match=r"shapes differ.*init_h\.0\.weight"):
        mc.load_captioner(str(path))
    write_published(path, source, lm_words=["other", "words", "here", "now"])
    with pytest.raises(ValueError, match="language model's vocabulary"):
        mc.load_captioner(str(path))
    state = dict(source.state_dict())
    state.pop("lstm.weight_hh")
    write_published(path, source, state=state)
    with pytest.raises(ValueError, match=r"missing \(1\).*lstm\.weight_hh"):
        mc.load_captioner(str(path))


def test_the_loader_never_unpickles_objects_outside_its_allow_list(tmp_path):
    source = small_captioner()
    path = tmp_path / "evil.pth"
    write_published(path, source, extra_props={"hook": os.getcwd})
    with pytest.raises(ValueError, match=r"posix\.getcwd.*trust_checkpoint=true"):
        mc.load_captioner(str(path))
    # the user may lift the restriction for a file they trust (the extra entry is ignored)
    payload = mc.read_published(path, trust_checkpoint=True)
    assert payload["properties"]["hook"] is os.getcwd


@pytest.mark.parametrize("cut", [0.5, 0.98])
def test_a_damaged_checkpoint_names_the_file_and_is_not_told_to_be_trusted(tmp_path, cut):
    path = tmp_path / "base.pth"
    write_published(path, small_captioner())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])  # a download cut short
    with pytest.raises(ValueError) as err:
        mc.read_published(path)
    assert str(path) in str(err.value) and "damaged" in str(err.value)
    assert "trust_checkpoint" not in str(err.value)


def test_unknown_checkpoint_names_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="explainer.checkpoint"):
        mc.load_captioner("no-such-milan")
    with pytest.raises(FileNotFoundError, match="not found"):
        mc.load_captioner(str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="not a MILAN checkpoint"):
        mc.captioner_from_published({"weights": 1}, "f.pth")


def test_a_checkpoint_file_keys_the_explanations_by_content(tmp_path, monkeypatch):
    from cosy_bench.explainers.milan import MilanExplainer

    monkeypatch.setenv("COSY_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "milan.pth"
    path.write_bytes(b"a" * 64)
    explainer = MilanExplainer(probe={"_target_": "p"}, checkpoint=str(path))
    before = explainer.cache_key()
    assert explainer.cache_key() == before
    st = path.stat()
    time.sleep(0.02)  # past the file system's coarse clock tick: the ctime moves
    path.write_bytes(b"b" * 64)  # the repro: same size, mtime put back
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    assert explainer.cache_key() != before


def test_published_sizes_of_the_random_decoder():
    model = mc.random_captioner(encoder="resnet101")
    assert model.encoder.feature_size == 3904
    assert (model.embedding_size, model.hidden_size, model.beam_size, model.length) == (
        128, 512, 50, 15)
    assert (model.lm.layers, model.lm.hidden_size, model.temperature) == (2, 512, 0.2)
    assert model.lstm.weight_ih.shape == (4 * 512, 128 + 3904)
    state = model.state_dict()
    # the authors' Decoder(PyramidConvEncoder("resnet101"), LanguageModel) has 658 entries:
    # resnet101's 626 (incl. BatchNorm counters), mean, std, and these 30
    assert len(state) == 658
    own = {k for k in state if not k.startswith("encoder.")}
    assert own == {
        "init_h.0.weight", "init_h.0.bias", "init_c.0.weight", "init_c.0.bias",
        "embedding.weight", "attend.query_to_hidden.weight", "attend.query_to_hidden.bias",
        "attend.key_to_hidden.weight", "attend.key_to_hidden.bias", "attend.output.0.weight",
        "attend.output.0.bias", "feature_gate.0.weight", "feature_gate.0.bias",
        "lstm.weight_ih", "lstm.weight_hh", "lstm.bias_ih", "lstm.bias_hh",
        "output.1.weight", "output.1.bias", "lm.embedding.weight",
        *(f"lm.lstm.{w}_l{i}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
          for i in (0, 1)),
        "lm.output.0.weight", "lm.output.0.bias"}
    assert {"encoder.mean", "encoder.std", "encoder.encoder.model.conv1.weight",
            "encoder.encoder.model.layer4.2.conv3.weight",
            "encoder.encoder.model.fc.weight"} <= set(state)
    assert state["attend.key_to_hidden.weight"].shape == (512, 3904)
    assert state["output.1.weight"].shape == (len(model.vocab), 512)


# ---------------------------------------------------------------- decoding


def _unigram(module_output: torch.nn.Linear, probs: dict[int, float], v: int):
    """Make a Linear -> LogSoftmax head emit the same distribution at every step."""
    logits = torch.full((v,), -30.0)
    for i, p in probs.items():
        logits[i] = math.log(p)
    with torch.no_grad():
        module_output.weight.zero_()
        module_output.bias.copy_(logits)


def test_pmi_reranking_prefers_the_specific_caption_the_lm_finds_unlikely():
    model = small_captioner(words=("objects", "red"))
    v, voc = len(model.vocab), model.vocab
    objects, red = voc.ids["objects"], voc.ids["red"]
    # captioner: "objects" a little likelier than "red"; the LM: "objects" is generic
    _unigram(model.output[1], {objects: 0.45, red: 0.40, voc.stop: 0.15}, v)
    _unigram(model.lm.output[0], {objects: 0.89, red: 0.01, voc.stop: 0.10}, v)
    feats = torch.rand(1, 3, model.feature_size)
    by_likelihood = model.describe(feats, strategy="beam")[0]
    by_pmi = model.describe(feats, strategy="rerank", temperature=0.2)[0]
    assert by_likelihood["description"] == "objects"
    assert by_pmi["description"] == "red"
    want = math.log(0.40) + math.log(0.15) - 0.2 * (math.log(0.01) + math.log(0.10))
    assert by_pmi["score"] == pytest.approx(want, abs=1e-4)
    assert by_pmi["log_p_lm"] == pytest.approx(math.log(0.01) + math.log(0.10), abs=1e-4)
    # no weight on the prior: likelihood again
    assert model.describe(feats, strategy="rerank", temperature=0.0)[0]["description"] == "objects"
    assert torch.equal(pmi_scores(torch.tensor([-1.0]), torch.tensor([-2.0]), 0.5),
                       torch.tensor([0.0]))


def test_beam_search_with_a_wide_beam_finds_the_most_likely_caption():
    model = small_captioner(words=("a", "b", "c"), seed=3)
    voc = model.vocab
    feats = torch.rand(2, 3, model.feature_size)
    length = 3
    beam = model.beam_search(feats, beam_size=200, length=length)
    assert beam.tokens.shape[2] == length
    for unit in range(2):
        best = -math.inf
        for n in range(1, length + 1):  # every caption of 1..length words (+ stop if room)
            for words in itertools.product(range(3), repeat=n):
                seq = list(words) + ([voc.stop] if n < length else [])
                tok = torch.tensor([[voc.start, *seq]])
                with torch.no_grad():
                    lp, _ = model(feats[unit:unit + 1], tok)
                best = max(best, float(lp[0].gather(-1, tok[0, 1:, None]).sum()))
        assert float(beam.scores[unit, 0]) == pytest.approx(best, abs=1e-4)
        assert beam.scores[unit].tolist() == sorted(beam.scores[unit].tolist(), reverse=True)


def test_lm_sequence_log_prob_stops_at_the_first_stop_token():
    model = small_captioner(words=("x", "y"))
    voc = model.vocab
    tok = torch.tensor([[voc.ids["x"], voc.stop, voc.stop, voc.stop],
                        [voc.ids["x"], voc.stop, voc.ids["y"], voc.ids["y"]]])
    with torch.no_grad():
        lp = model.lm.sequence_log_prob(tok)
        full = model.lm(torch.tensor([[voc.start, voc.ids["x"], voc.stop]]))[0]
    assert lp[0] == pytest.approx(float(lp[1]), abs=1e-6)  # what follows a stop never counts
    assert float(lp[0]) == pytest.approx(float(full[0, voc.ids["x"]] + full[1, voc.stop]),
                                         abs=1e-5)


def test_vocabulary_layout_and_round_trip():
    voc = Vocabulary(["red", "circles"])
    assert (voc.start, voc.stop, voc.pad, voc.unk, len(voc)) == (2, 3, 4, 5, 6)
    enc = voc.encode(["Red circles", "red"])
    assert enc.tolist() == [[2, 0, 1, 3], [2, 0, 3, 4]]
    assert voc.decode(enc[0, 1:].tolist()) == "red circles"
    assert voc.decode([0, 5, 3, 1]) == "red"  # specials never reach the text
    punct = Vocabulary(["dogs", ",", "cats", "-", "like", "."])
    assert punct.decode([0, 1, 2, 3, 4, 5]) == "dogs, cats-like."
    with pytest.raises(ValueError, match="special"):
        Vocabulary(["<stop>"])


def test_pyramid_masks_restrict_the_features_to_the_masked_region():
    enc = PyramidEncoder("toy_cnn").eval()
    img = torch.rand(1, 3, 64, 64)
    left = torch.zeros(1, 1, 64, 64)
    left[..., :32] = 1
    other = img.clone()
    other[..., 40:] = torch.rand(1, 3, 64, 24)  # change only pixels far right of the mask
    with torch.no_grad():
        a, b = enc(img, left), enc(other, left)
        whole_a, whole_b = enc(img), enc(other)
    # the first level (conv1, 5x5 receptive field) pooled over the left half is unchanged
    assert torch.allclose(a[0, :32], b[0, :32], atol=1e-5)
    assert not torch.allclose(whole_a[0, :32], whole_b[0, :32], atol=1e-3)
    with torch.no_grad():
        empty = enc(img, torch.zeros(1, 1, 64, 64))
        ones, scaled = enc(img, torch.ones(1, 1, 64, 64)), enc(img, 3 * left)
        conv1 = enc.encoder.model.conv1((img - enc.mean) / enc.std)
    assert torch.count_nonzero(empty) == 0
    # masks are normalised to sum 1: a full mask is the spatial mean, scaling changes nothing
    assert torch.allclose(ones[0, :32], conv1.mean(dim=(2, 3))[0], atol=1e-5)
    assert torch.allclose(scaled, a, atol=1e-5)


# ---------------------------------------------------------------- the toy decoder


def test_the_toy_training_command_runs_a_few_steps_and_writes_a_loadable_file(tmp_path):
    from cosy_bench.toyworld.training.milan import main

    out = tmp_path / "toy_milan.safetensors"
    main(["--seed", "1", "--pool", "150", "--per-target", "1", "--epochs", "1",
          "--max-steps", "3", "--out", str(out)])
    model = mc.load_safetensors(out)
    assert model.encoder.config == "toy_cnn" and model.lm is not None
    assert "objects" in model.vocab.words and "stripes" in model.vocab.words
    d = model.describe(torch.rand(2, 15, 320))
    assert len(d) == 2 and all(x["description"] for x in d)


def test_the_shipped_toy_decoder_is_small_and_records_how_it_was_trained():
    from safetensors import safe_open

    path = mc.TOY_CHECKPOINT
    assert path.stat().st_size < 5_000_000
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    # recorded when the trainer was cosy_bench.toyworld.train_milan (now .training.milan)
    assert meta["command"].startswith("python -m cosy_bench.toyworld.train_milan")
    assert float(meta["held_out_accuracy"]) >= 0.9
    model = mc.load_captioner("toyworld")
    assert model.encoder.config == "toy_cnn"


def test_the_checkpoint_command_loads_strictly_and_decodes(tmp_path, capsys):
    source = small_captioner()
    path = tmp_path / "milan-x.pth"
    write_published(path, source)
    mc.main([str(path)])
    out = capsys.readouterr().out
    assert "loaded strictly; encoder toy_cnn (320 features), vocabulary 4 words" in out
    assert "random exemplars -> {'description':" in out


def test_a_published_name_offline_says_how_to_proceed(tmp_path, monkeypatch):
    from helpers import no_network

    monkeypatch.setenv("COSY_CACHE_DIR", str(tmp_path))
    with no_network(), pytest.raises(RuntimeError, match=r"milan-base\.pth.*checkpoint=random"):
        mc.load_captioner("base")
    assert not list(tmp_path.rglob("*.pth")) and not list(tmp_path.rglob("*.part"))


def test_describe_units_gives_each_unit_its_own_exemplars_and_masks():
    from PIL import Image

    from cosy_bench.explainers.milan import describe_units
    from cosy_bench.loops.exemplars import Exemplars

    images = [Image.new("RGB", (8, 8), (40 * i, 0, 0)) for i in range(6)]
    ex = Exemplars(indices=torch.tensor([[0, 1], [2, 3], [4, 5]]),
                   scores=torch.ones(3, 2), maps=torch.randn(3, 2, 2, 2), levels=torch.zeros(3))

    class Recorder:
        def __init__(self):
            self.calls, self.p = [], torch.nn.Parameter(torch.zeros(1))

        def parameters(self):
            return iter([self.p])

        def encode(self, imgs, masks):
            self.calls.append((imgs, masks))
            return torch.zeros(len(imgs), imgs.shape[1], 4)

        def describe(self, feats, **_):
            return [{"description": "x"} for _ in range(len(feats))]

    rec = Recorder()
    import torchvision.transforms as T

    out = describe_units(rec, ex, images, T.ToTensor(), [2, 0], batch_units=1)
    assert len(out) == 2 and len(rec.calls) == 2
    want_masks = ex.masks((8, 8))
    for (imgs, masks), unit in zip(rec.calls, [2, 0], strict=True):
        assert imgs.shape == (1, 2, 3, 8, 8)
        assert torch.equal(masks[0, :, 0].bool(), want_masks[unit])
        red = imgs[0, :, 0, 0, 0] * 255
        assert torch.allclose(red, 40 * ex.indices[unit].float(), atol=0.5)


def test_the_milan_benchmark_keeps_the_same_state_for_more_images():
    from cosy_bench.bench.milan import exemplar_pass

    small, large = exemplar_pass(16, "avgpool", 8), exemplar_pass(40, "avgpool", 8)
    assert small["units"] == large["units"] == 512
    assert small["kept_mb"] == large["kept_mb"] > 0  # top-k maps and levels, whatever N
