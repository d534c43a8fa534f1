"""cosy_bench.explainers.precomputed on small hand-written CSVs in the published formats."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from cosy_bench.explainers.precomputed import FORMATS, detect_format, read_explanations


def _write(tmp_path: Path, text: str, name: str = "expl.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


INVERT = """neuron,concept,concept_id,metric
0,tench,n01440764,0.9990
1,"jacuzzi, indoor",195,0.9641
2,café au lait,n07920052,0.9
3,shoji / screen,n04209239,0.88
"""

CLIP_DISSECT = """layer,unit,description,similarity
layer4,0,"prayer rug, prayer mat",0.16134644
layer4,1,"bookshop, bookstore, bookstall",0.58755493
layer4,2,crème brûlée,0.3
layer4,3,"a ""quoted"" thing / slash",0.2
"""

MILAN = """layer,unit,description
features,0,Items of central focus
features,1,"Dogs, cats and other pets"
features,2,  Trees\t
"""

FALCON = """group,Unnamed: 0,concept_set_words,concept_set_noun_phrases
48,48,"[('key', 0.05), ('piano', 0.04)]","[('butternut squash', 0.0346), ('bangkok web', 0.0333)]"
54,54,"[('bottle', 0.06)]","[(""champagne bottle, chilled"", 0.042), ('ice bucket', 0.025)]"
7,7,"[('x', 0.1)]","[('Ärmel / sleeve', 0.2), ('other', 0.1)]"
"""


def test_invert_format(tmp_path):
    path = _write(tmp_path, INVERT)
    assert detect_format(path) == "invert"
    assert read_explanations(path) == {
        0: "tench",
        1: "jacuzzi, indoor",
        2: "café au lait",
        3: "shoji / screen",
    }


def test_invert_minimal_columns_and_str_path(tmp_path):
    path = _write(tmp_path, "concept,neuron\nzebra,5\nstriped, 2\n")
    assert read_explanations(str(path)) == {5: "zebra", 2: "striped"}


def test_clip_dissect_format(tmp_path):
    path = _write(tmp_path, CLIP_DISSECT)
    assert detect_format(path) == "layer_unit"
    assert read_explanations(path) == {
        0: "prayer rug, prayer mat",
        1: "bookshop, bookstore, bookstall",
        2: "crème brûlée",
        3: 'a "quoted" thing / slash',
    }
    assert read_explanations(path, layer="layer4")[1] == "bookshop, bookstore, bookstall"


def test_milan_format_keeps_case_and_strips_spaces(tmp_path):
    path = _write(tmp_path, MILAN)
    assert read_explanations(path, format="milan") == {
        0: "Items of central focus",
        1: "Dogs, cats and other pets",
        2: "Trees",
    }
    assert read_explanations(path) == read_explanations(path, format="layer_unit")


def test_falcon_format_takes_first_phrase(tmp_path):
    path = _write(tmp_path, FALCON)
    assert detect_format(path) == "falcon"
    assert read_explanations(path) == {
        48: "butternut squash",
        54: "champagne bottle, chilled",
        7: "Ärmel / sleeve",
    }


def test_falcon_never_evaluates_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    path = _write(
        tmp_path, f'group,concept_set_noun_phrases\n1,"{payload.replace(chr(34), chr(34) * 2)}"\n'
    )
    with pytest.raises(ValueError, match=r"line 2, column 'concept_set_noun_phrases'"):
        read_explanations(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("[]", "non-empty list"),
        ("[('a', 0.1)", "not a Python literal"),
        ("['plain']", r"\(phrase, score\) tuples, first item is 'plain'"),
        ("42", "non-empty list"),
    ],
)
def test_falcon_malformed_lists(tmp_path, cell, message):
    path = _write(tmp_path, f'group,concept_set_noun_phrases\n3,"{cell}"\n')
    with pytest.raises(ValueError, match=message):
        read_explanations(path)


MULTI = """layer,unit,description,similarity
layer1,0,stripes,0.1
layer1,1,"dots, spots",0.1
layer2,0,grass,0.2
layer2,1,sky,0.3
layer2,2,water,0.3
"""


def test_multi_layer_file_filters_by_layer(tmp_path):
    path = _write(tmp_path, MULTI)
    assert read_explanations(path, layer="layer1") == {0: "stripes", 1: "dots, spots"}
    assert read_explanations(path, layer="layer2") == {0: "grass", 1: "sky", 2: "water"}
    with pytest.raises(ValueError, match=r"several layers \['layer1', 'layer2'\].*layer="):
        read_explanations(path)
    with pytest.raises(ValueError, match=r"no rows for layer 'layer3'; layers: \['layer1'"):
        read_explanations(path, layer="layer3")


def test_single_layer_file_is_used_whatever_layer_is_asked(tmp_path):
    path = _write(tmp_path, CLIP_DISSECT)
    with pytest.warns(UserWarning, match=r"asked for layer 'fc'.*only layer 'layer4'"):
        assert len(read_explanations(path, layer="fc")) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_explanations(path, layer="layer4")  # the matching name: no warning
        read_explanations(_write(tmp_path, INVERT, "inv.csv"), layer="anything")  # ignored


def test_bom_and_header_spaces(tmp_path):
    path = _write(tmp_path, "neuron , concept\n0,dog\n", encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_explanations(path) == {0: "dog"}


def test_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope" / "INVERT-layer9.csv"
    with pytest.raises(FileNotFoundError, match="INVERT-layer9.csv"):
        read_explanations(missing)


def test_unknown_columns_are_named(tmp_path):
    path = _write(tmp_path, "id,label,score\n0,dog,1\n")
    with pytest.raises(ValueError) as err:
        read_explanations(path)
    msg = str(err.value)
    assert "['id', 'label', 'score']" in msg
    for required in FORMATS.values():
        assert str(sorted(required)) in msg


def test_ambiguous_columns_need_format(tmp_path):
    path = _write(tmp_path, "neuron,concept,layer,unit,description\n0,dog,l,5,cat\n")
    with pytest.raises(ValueError, match=r"several formats \['invert', 'layer_unit'\]"):
        read_explanations(path)
    assert read_explanations(path, format="INVERT") == {0: "dog"}
    assert read_explanations(path, format="clip-dissect") == {5: "cat"}


def test_forced_format_errors(tmp_path):
    path = _write(tmp_path, INVERT)
    with pytest.raises(ValueError, match=r"format 'falcon' needs columns.*missing"):
        read_explanations(path, format="falcon")
    with pytest.raises(ValueError, match=r"unknown explanation format 'netdissect'"):
        read_explanations(path, format="netdissect")


def test_duplicate_neuron(tmp_path):
    path = _write(tmp_path, "neuron,concept\n0,dog\n3,cat\n3,bird\n")
    with pytest.raises(ValueError, match=r"line 4: duplicate neuron 3 \(first on line 3\)"):
        read_explanations(path)


@pytest.mark.parametrize("bad", ["3.0", "abc", "-1", "", "٣"])
def test_non_integer_neuron_ids(tmp_path, bad):
    path = _write(tmp_path, f"layer,unit,description\nl,0,dog\nl,{bad},cat\n")
    with pytest.raises(ValueError, match=r"line 3, column 'unit': neuron id .* non-negative"):
        read_explanations(path)


@pytest.mark.parametrize(
    "text",
    [
        "neuron,concept\n0,dog\n1,\n",
        'neuron,concept\n0,dog\n1,"   "\n',
        "group,concept_set_noun_phrases\n0,\"[('dog', 1.0)]\"\n1,\"[('  ', 0.5)]\"\n",
    ],
)
def test_empty_description(tmp_path, text):
    with pytest.raises(ValueError, match=r"line 3: empty explanation for neuron 1"):
        read_explanations(_write(tmp_path, text))


def test_empty_file_and_header_only(tmp_path):
    with pytest.raises(ValueError, match="file is empty"):
        read_explanations(_write(tmp_path, "", "empty.csv"))
    with pytest.raises(ValueError, match="no explanation rows"):
        read_explanations(_write(tmp_path, "neuron,concept\n\n", "header.csv"))


def test_ragged_row(tmp_path):
    path = _write(tmp_path, "neuron,concept\n0,dog\n1,cat,extra\n")
    with pytest.raises(ValueError, match=r"line 3: 3 fields but the header has 2"):
        read_explanations(path)


def test_a_non_utf8_file_names_the_file_and_the_encoding(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("neuron,concept\n0,caf\xe9 cr\xe8me\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.csv: not UTF-8 text \(byte 0xe9"):
        read_explanations(path)


def test_the_cache_key_follows_the_file_content_not_its_time_stamp(tmp_path):
    import os

    from cosy_bench.explainers.precomputed import PrecomputedExplainer

    path = tmp_path / "e.csv"
    path.write_text("neuron,concept\n0,red\n")
    key = PrecomputedExplainer(str(path)).cache_key()
    stamp = os.stat(path).st_mtime_ns
    path.write_text("neuron,concept\n0,dog\n")  # same size
    os.utime(path, ns=(stamp, stamp))
    assert PrecomputedExplainer(str(path)).cache_key() != key
    path.write_text("neuron,concept\n0,red\n")
    assert PrecomputedExplainer(str(path)).cache_key() == key
