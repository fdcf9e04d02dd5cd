"""Weight adapters: every container a model may hand over comes back as the same container."""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest
import safetensors.numpy
import torch

from colearn_contract.mli import Weights
from colearn_contract.weights_codec import WeightsCodecError
from colearn_learner.weight_adapters import WeightsSignature, decode_weights, encode_weights


def roundtrip(obj: Any) -> tuple[Any, WeightsSignature, WeightsSignature]:
    data, signature = encode_weights(Weights(obj))
    back = decode_weights(data, expected=signature)  # raises if the decoded weights do not fit
    _, decoded_signature = encode_weights(back)
    return back.weights, signature, decoded_signature


def assert_equal_arrays(got: Any, want: np.ndarray) -> None:
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def assert_equal_tensors(got: Any, want: torch.Tensor) -> None:
    assert isinstance(got, torch.Tensor)
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert torch.equal(got, want)


def test_one_ndarray() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    back, signature, decoded = roundtrip(array)
    assert_equal_arrays(back, array)
    assert signature == decoded
    assert signature.structure == "array"


def test_list_of_arrays_keeps_order_and_dtypes() -> None:
    arrays = [
        np.ones((2, 2), np.float64),
        np.arange(5, dtype=np.int32),
        np.zeros(0, np.uint8),
        np.array([True]),
    ]
    back, signature, decoded = roundtrip(arrays)
    assert type(back) is list
    assert len(back) == len(arrays)
    for got, want in zip(back, arrays, strict=True):
        assert_equal_arrays(got, want)
    assert signature == decoded


def test_tuple_stays_a_tuple() -> None:
    arrays = (np.full(3, 7, np.int64), np.eye(2, dtype=np.float16))
    back, _, _ = roundtrip(arrays)
    assert type(back) is tuple
    for got, want in zip(back, arrays, strict=True):
        assert_equal_arrays(got, want)


def test_dict_keeps_its_key_order() -> None:
    weights = {
        "zeta": np.arange(3.0),
        "alpha": np.ones(2, np.complex64),
        "10": np.zeros((1, 1), np.int8),
        "2": np.ones(1),
    }
    back, signature, decoded = roundtrip(weights)
    assert type(back) is dict
    assert list(back) == ["zeta", "alpha", "10", "2"]
    for name, want in weights.items():
        assert_equal_arrays(back[name], want)
    assert signature == decoded


def test_torch_state_dict_with_bfloat16() -> None:
    torch.manual_seed(0)
    state = OrderedDict(
        [
            ("layer.weight", torch.randn(4, 3)),
            ("layer.bias", torch.randn(4, dtype=torch.bfloat16)),
            ("norm.running_mean", torch.randn(3, dtype=torch.float64)),
            ("norm.num_batches_tracked", torch.tensor([7], dtype=torch.int64)),
            ("embed.weight", torch.randn(2, 5, dtype=torch.bfloat16)),
            ("mask", torch.tensor([True, False])),
            ("half", torch.randn(2, dtype=torch.float16)),
        ]
    )
    back, signature, decoded = roundtrip(state)
    assert isinstance(back, dict)
    assert list(back) == list(state)
    for name, want in state.items():
        assert_equal_tensors(back[name], want)
    assert signature == decoded
    assert signature.tensor_type == "torch"
    # The decoded state_dict loads into a real module.
    module = torch.nn.Linear(3, 4)
    module.load_state_dict({"weight": back["layer.weight"], "bias": back["layer.bias"].float()})


def test_torch_state_dict_from_a_module_round_trips() -> None:
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.BatchNorm1d(3))
    state = model.state_dict()
    back, _, _ = roundtrip(state)
    assert list(back) == list(state)
    for name, want in state.items():
        assert_equal_tensors(back[name], want)
    fresh = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.BatchNorm1d(3))
    fresh.load_state_dict(back)


def test_torch_tensors_in_a_list_come_back_as_tensors() -> None:
    tensors = [torch.arange(4, dtype=torch.int32), torch.ones(2, 2, dtype=torch.bfloat16)]
    back, _, _ = roundtrip(tensors)
    assert type(back) is list
    for got, want in zip(back, tensors, strict=True):
        assert_equal_tensors(got, want)


def test_decoded_torch_tensors_are_writable_and_independent() -> None:
    state = {"w": torch.zeros(3)}
    back, _, _ = roundtrip(state)
    back["w"] += 1  # training updates weights in place
    assert torch.equal(back["w"], torch.ones(3))
    assert torch.equal(state["w"], torch.zeros(3))


def test_zero_dimensional_numpy_weight_keeps_its_shape() -> None:
    weights = {"w": np.ones(3, np.float32), "bias": np.array(0.25, np.float32)}
    back, signature, decoded = roundtrip(weights)
    assert_equal_arrays(back["bias"], weights["bias"])
    # The signature a model's own weights produce must equal the one they produce after the wire.
    assert signature == decoded


def test_zero_dimensional_torch_tensors_keep_their_shape() -> None:
    state = {"scale": torch.tensor(1.5, dtype=torch.bfloat16), "step": torch.tensor(3)}
    back, signature, decoded = roundtrip(state)
    for name, want in state.items():
        assert_equal_tensors(back[name], want)
    assert signature == decoded


def test_scalars_become_arrays() -> None:
    back, _, _ = roundtrip([1.5, 2, True, np.float32(3)])
    assert [a.dtype for a in back] == [
        np.dtype(np.float64),
        np.dtype(np.int64),
        np.dtype(bool),
        np.dtype(np.float32),
    ]
    assert [a.item() for a in back] == [1.5, 2, True, 3.0]


def test_signature_counts_parameters_and_spots_mismatches() -> None:
    weights = {"coef": np.zeros((10, 64)), "intercept": np.zeros(10)}
    _, signature = encode_weights(Weights(weights))
    assert signature.parameter_count == 650
    assert signature.mismatch(signature) is None

    def sig(obj: Any) -> WeightsSignature:
        return encode_weights(Weights(obj))[1]

    assert "coef" in signature.mismatch(sig({"coef": np.zeros((10, 63)), "intercept": np.zeros(10)}))
    assert signature.mismatch(sig({"coef": np.zeros((10, 64), np.float32), "intercept": np.zeros(10)}))
    assert signature.mismatch(sig({"intercept": np.zeros(10), "coef": np.zeros((10, 64))}))
    assert signature.mismatch(sig({"coef": np.zeros((10, 64))}))
    assert signature.mismatch(sig([np.zeros((10, 64)), np.zeros(10)]))
    assert signature.mismatch(
        sig({"coef": torch.zeros(10, 64, dtype=torch.float64), "intercept": torch.zeros(10)})
    )


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param({"a": np.zeros(2), "b": torch.zeros(2)}, id="mixed-torch-and-numpy"),
        pytest.param({1: np.zeros(2)}, id="non-string-key"),
        pytest.param(["not an array"], id="a-string"),
        pytest.param({"a": None}, id="none"),
        pytest.param([[1.0, 2.0]], id="nested-list"),
        pytest.param({"a": {"b": np.zeros(2)}}, id="nested-dict"),
        pytest.param(object(), id="an-object"),
        pytest.param([np.array([1 + 1j])], id="complex128"),
    ],
)
def test_unsupported_weights_are_refused_with_a_codec_error(obj: Any) -> None:
    with pytest.raises(WeightsCodecError):
        encode_weights(Weights(obj))


def crafted(tensors: dict[str, np.ndarray], extra: dict[str, str], structure: str = "dict") -> bytes:
    layout = {"structure": structure, "names": list(tensors), "extra": extra}
    return safetensors.numpy.save(tensors, metadata={"colearn.layout": json.dumps(layout)})


@pytest.mark.parametrize(
    "buffer",
    [
        pytest.param(crafted({"a": np.zeros(3)}, {}, structure="set"), id="unknown-structure"),
        pytest.param(crafted({"a": np.zeros(3), "b": np.zeros(3)}, {}, structure="array"), id="array-of-two"),
        pytest.param(
            crafted({"a": np.zeros(4, np.int16)}, {"tensor_type": "torch", "bfloat16": "not json"}),
            id="bfloat16-list-not-json",
        ),
        pytest.param(
            crafted({"a": np.zeros(4, np.int16)}, {"tensor_type": "torch", "bfloat16": "5"}),
            id="bfloat16-list-not-a-list",
        ),
        pytest.param(
            crafted({"a": np.zeros(3, np.int8)}, {"tensor_type": "torch", "bfloat16": '["a"]'}),
            id="bfloat16-over-int8",
        ),
        pytest.param(
            crafted({"a": np.zeros((), np.float64)}, {"tensor_type": "torch", "bfloat16": '["a"]'}),
            id="bfloat16-over-0d-float64",
        ),
    ],
)
def test_crafted_layouts_are_refused_with_a_codec_error(buffer: bytes) -> None:
    """A hostile peer controls the layout metadata: whatever it says, decoding fails only as a codec error."""
    with pytest.raises(WeightsCodecError):
        decode_weights(buffer)
