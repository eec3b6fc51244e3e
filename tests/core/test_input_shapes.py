"""DataInputConfig entries: plain shapes with ranges, Core ML's object form, the list form, and
every malformed entry's error (it names the input, the value and the allowed form)."""

from __future__ import annotations

import pytest

from airflow_neo.core.input_shapes import IMAGE, TENSOR, InputShape, Range, parse_data_input, parse_input_entry


def test_plain_static_shape():
    entry = parse_input_entry("data", [1, 3, 224, 224])
    assert entry == InputShape("data", (1, 3, 224, 224))
    assert entry.is_static and not entry.has_range and not entry.object_form
    assert entry.static_shape == (1, 3, 224, 224) and entry.rank == 4


def test_plain_shape_with_range():
    entry = parse_input_entry("data", ["1..10", 3, " 2 .. 64 ", 224])
    assert entry.dims == (Range(1, 10), 3, Range(2, 64), 224)
    assert entry.has_range and not entry.is_static and entry.static_shape is None
    assert entry.representative_shape == (1, 3, 2, 224)
    assert entry.shape_text() == "[1..10, 3, 2..64, 224]"
    assert 10 in entry.dims[0] and 11 not in entry.dims[0] and 0 not in entry.dims[0]


def test_range_equal_bounds_is_allowed():
    assert parse_input_entry("x", ["4..4"]).dims == (Range(4, 4),)


@pytest.mark.parametrize(
    "dim", ["1..-1", "-1..10", "0..10", "10..1", "1..", "..10", "1...10", "abc", "224", 1.5, True, 0, -3, None, [1]]
)
def test_bad_dimension_names_input_value_and_form(dim):
    with pytest.raises(ValueError) as err:
        parse_input_entry("input_1", [1, dim, 224])
    text = str(err.value)
    assert "'input_1'" in text and repr(dim) in text and "dimension 1" in text and "'lo..hi'" in text


@pytest.mark.parametrize("lo,hi", [(0, 3), (5, 4), (True, 3), (1.0, 3)])
def test_range_record_rejects_bad_bounds(lo, hi):
    with pytest.raises(ValueError):
        Range(lo, hi)


@pytest.mark.parametrize("value", [[], (), "1,3,224", 224, None])
def test_bad_entry(value):
    with pytest.raises(ValueError, match="'data'"):
        parse_input_entry("data", value)


def test_object_form_range_with_default():
    entry = parse_input_entry("input_1", {"shape": ["1..10", 224, 224, 3], "default_shape": [1, 224, 224, 3]})
    assert entry.object_form and entry.input_type == TENSOR
    assert entry.dims == (Range(1, 10), 224, 224, 3) and entry.enumerated is None
    assert entry.default_shape == (1, 224, 224, 3) and entry.representative_shape == (1, 224, 224, 3)


def test_object_form_enumerated_image():
    entry = parse_input_entry(
        "input_1",
        {
            "shape": [[1, 224, 224, 3], [1, 160, 160, 3]],
            "default_shape": [1, 160, 160, 3],
            "type": "Image",
            "bias": [-1, -1, -1],
            "scale": 0.007843137255,
        },
    )
    assert entry.dims is None and entry.enumerated == ((1, 224, 224, 3), (1, 160, 160, 3))
    assert not entry.is_static and not entry.has_range and entry.rank == 4
    assert entry.input_type == IMAGE and entry.bias == (-1.0, -1.0, -1.0) and entry.scale == pytest.approx(1 / 127.5)
    assert entry.shape_text() == "[[1, 224, 224, 3], [1, 160, 160, 3]]"


def test_object_form_one_enumerated_shape_is_static():
    entry = parse_input_entry("x", {"shape": [[1, 3, 8, 8]]})
    assert entry.is_static and entry.dims == (1, 3, 8, 8) and entry.enumerated is None


def test_object_form_grayscale_scalar_bias():
    entry = parse_input_entry("x", {"shape": [1, 1, 8, 8], "type": "Image", "bias": -0.5, "scale": 2})
    assert entry.bias == (-0.5,) and entry.scale == 2.0


@pytest.mark.parametrize(
    "value,needle",
    [
        ({"shape": [1, 3], "colour": "RGB"}, "unknown keys ['colour']"),
        ({"default_shape": [1, 3]}, "no 'shape'"),
        ({"shape": [[1, 3, 8, 8], [1, 3, 8]]}, "ranks [3, 4]"),
        ({"shape": [[1, 3, 8, 8], [1, 3, 8, 8]]}, "repeat"),
        ({"shape": [[1, "1..3"], [1, 2]]}, "must be static"),
        ({"shape": ["1..10", 3], "default_shape": [11, 3]}, "dimension 0: 11 is not in 1..10"),
        ({"shape": ["1..10", 3], "default_shape": [1, 4]}, "dimension 1: 4 is not in 3"),
        ({"shape": ["1..10", 3], "default_shape": [1, 3, 1]}, "rank 3"),
        ({"shape": ["1..10", 3], "default_shape": ["1..2", 3]}, "must be static"),
        ({"shape": [[1, 3], [2, 3]], "default_shape": [3, 3]}, "not one of the enumerated shapes"),
        ({"shape": [1, 3], "type": "image"}, "type is 'image'; allowed: ['Image', 'Tensor']"),
        ({"shape": [1, 3], "bias": [1, 2, 3]}, "Image inputs only"),
        ({"shape": [1, 3], "type": "Tensor", "scale": 2.0}, "Image inputs only"),
        ({"shape": [1, 3, 8, 8], "type": "Image", "bias": [1, 2]}, "1 (grayscale) or 3 (RGB) numbers"),
        ({"shape": [1, 3, 8, 8], "type": "Image", "bias": ["a", 1, 1]}, "bias is"),
        ({"shape": [1, 3, 8, 8], "type": "Image", "scale": 0}, "non-zero number"),
        ({"shape": [1, 3, 8, 8], "type": "Image", "scale": "0.5"}, "non-zero number"),
        ({"shape": [1, 3, 8, 8], "type": "Image", "scale": float("nan")}, "non-zero number"),
    ],
)
def test_bad_object_form(value, needle):
    with pytest.raises(ValueError) as err:
        parse_input_entry("input_1", value)
    assert "'input_1'" in str(err.value) and needle in str(err.value)


def test_parse_data_input_dict_keeps_order():
    entries = parse_data_input({"b": [1, 3], "a": {"shape": ["1..4", 3]}})
    assert [e.name for e in entries] == ["b", "a"]
    assert not any(e.positional for e in entries) and [e.object_form for e in entries] == [False, True]


def test_parse_data_input_list_form_is_positional():
    entries = parse_data_input([[1, 3, 8, 8], {"shape": [[1, 10], [2, 10]], "default_shape": [2, 10]}])
    assert [(e.name, e.positional) for e in entries] == [("input0", True), ("input1", True)]
    assert entries[1].enumerated == ((1, 10), (2, 10)) and entries[1].default_shape == (2, 10)


def test_parse_data_input_flat_list_is_refused():
    with pytest.raises(ValueError, match=r"holds '1..8'; the list form is a list of entries"):
        parse_data_input(["1..8", 3, 8, 8])


@pytest.mark.parametrize("config", [{}, [], "[1, 3]", 3, None])
def test_parse_data_input_rejects(config):
    with pytest.raises(ValueError, match="DataInputConfig"):
        parse_data_input(config)


def test_parse_data_input_error_names_the_input():
    with pytest.raises(ValueError, match="'second'.*dimension 2 is 'x'"):
        parse_data_input({"first": [1, 2], "second": [1, 2, "x"]})
