"""recommender/onnx_graph.py: the exported graph's rewrites change no output value and remove the pads."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from recommender.onnx_graph import fold_channel_flip, fold_zero_pads, preprocessing_nodes


def _model(pool_producer: str = "Relu", pad_value: float = 0.0) -> onnx.ModelProto:
    """uint8 NHWC pixels → cast → scale → NCHW → [Pad → Conv] → producer → [Pad → MaxPool], like tf2onnx's ResNet50 front."""
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    constants = [
        numpy_helper.from_array(np.array([0.02], np.float32), "scale"),
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(np.array([0, 0, 0, 1, 0, 0, 2, 1], np.int64), "conv_pads"),  # asymmetric, like MobileNetV2's
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pool_pads"),
        numpy_helper.from_array(np.array(pad_value, np.float32), "pool_value"),
    ]
    nodes = [
        helper.make_node("Cast", ["pixels"], ["float"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["float", "scale"], ["scaled"], name="scale"),
        helper.make_node("Transpose", ["scaled"], ["nchw"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Pad", ["nchw", "conv_pads"], ["padded"], name="conv_pad"),
        helper.make_node("Conv", ["padded", "weights"], ["conv"], name="conv", strides=[2, 2], pads=[1, 0, 0, 0]),
        helper.make_node(pool_producer, ["conv"], ["active"], name="active"),
        helper.make_node("Pad", ["active", "pool_pads", "pool_value"], ["pool_padded"], name="pool_pad"),
        helper.make_node("MaxPool", ["pool_padded"], ["pooled"], name="pool", kernel_shape=[3, 3], strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes, "front", [helper.make_tensor_value_info("pixels", TensorProto.UINT8, [None, 33, 31, 3])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [None, 4, None, None])], constants,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"pixels": pixels})[0])


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (2, 33, 31, 3), dtype=np.uint8)


def test_zero_pads_fold_into_the_convolution_and_the_pooling_without_changing_an_output(pixels):
    model = _model()
    before = _run(model, pixels)
    assert fold_zero_pads(model) == 2
    assert [node.op_type for node in model.graph.node] == ["Cast", "Mul", "Transpose", "Conv", "Relu", "MaxPool"]
    conv, pool = model.graph.node[3], model.graph.node[5]
    assert helper.get_attribute_value(next(a for a in conv.attribute if a.name == "pads")) == [1 + 0, 1, 2, 1]
    assert helper.get_attribute_value(next(a for a in pool.attribute if a.name == "pads")) == [1, 1, 1, 1]
    np.testing.assert_array_equal(_run(model, pixels), before)
    assert {tensor.name for tensor in model.graph.initializer} == {"scale", "weights"}  # the pads' constants went with them
    onnx.checker.check_model(model)


def test_pads_that_are_not_exact_to_fold_stay(pixels):
    signed = _model(pool_producer="Tanh")  # negative values: a zero border can win the max
    before = _run(signed, pixels)
    assert fold_zero_pads(signed) == 1 and [n.op_type for n in signed.graph.node].count("Pad") == 1
    np.testing.assert_array_equal(_run(signed, pixels), before)
    valued = _model(pad_value=7.0)  # a border of 7s is not a convolution's or a pooling's own padding
    assert fold_zero_pads(valued) == 1 and [n.op_type for n in valued.graph.node].count("Pad") == 1


def test_the_preprocessing_is_what_comes_before_the_first_convolution():
    model = _model()
    assert preprocessing_nodes(model) == ["cast", "scale", "to_nchw", "conv_pad"]
    fold_zero_pads(model)
    assert preprocessing_nodes(model) == ["cast", "scale", "to_nchw"]
    no_conv = _model()
    del no_conv.graph.node[3:]
    assert preprocessing_nodes(no_conv) == []


def _flip_model() -> onnx.ModelProto:
    """uint8 NHWC pixels → cast → RGB→BGR as tf2onnx exports it (three slices, reversed concat) → minus mean → NCHW → Conv."""
    rng = np.random.default_rng(2)
    constants = [
        numpy_helper.from_array(rng.standard_normal((5, 3, 3, 3)).astype(np.float32), "weights"),
        numpy_helper.from_array(np.array([[[[-103.9, -116.8, -123.7]]]], np.float32), "mean"),
        numpy_helper.from_array(np.array([3], np.int64), "axis"),
        *[numpy_helper.from_array(np.array([value], np.int64), f"at{value}") for value in range(4)],
    ]
    nodes = [
        helper.make_node("Cast", ["pixels"], ["float"], name="cast", to=TensorProto.FLOAT),
        *[helper.make_node("Slice", ["float", f"at{c}", f"at{c + 1}", "axis"], [f"channel{c}"], name=f"slice{c}") for c in range(3)],
        helper.make_node("Concat", ["channel2", "channel1", "channel0"], ["bgr"], name="flip", axis=3),
        helper.make_node("Add", ["bgr", "mean"], ["centred"], name="centre"),
        helper.make_node("Transpose", ["centred"], ["nchw"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "weights"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "flip", [helper.make_tensor_value_info("pixels", TensorProto.UINT8, [None, 33, 31, 3])],
        [helper.make_tensor_value_info("conv", TensorProto.FLOAT, [None, 5, 33, 31])], constants,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_channel_flip_folds_into_the_first_convolution(pixels):
    model = _flip_model()
    before = _run_named(model, pixels)
    assert fold_channel_flip(model)
    assert [node.op_type for node in model.graph.node] == ["Cast", "Add", "Transpose", "Conv"]
    np.testing.assert_allclose(_run_named(model, pixels), before, rtol=1e-5, atol=1e-3)  # the channels summed in another order
    assert not any(name.startswith("at") for name in (t.name for t in model.graph.initializer))
    onnx.checker.check_model(model)
    assert not fold_channel_flip(model)  # nothing left to fold


def test_a_flip_that_is_not_only_a_convolution_input_stays():
    as_output = _flip_model()
    as_output.graph.output.append(helper.make_tensor_value_info("bgr", TensorProto.FLOAT, [None, 33, 31, 3]))
    assert not fold_channel_flip(as_output)  # the flipped pixels are a graph output: they must stay flipped
    shared = _flip_model()
    shared.graph.node.append(helper.make_node("Identity", ["centred"], ["centred_copy"], name="second_user"))
    shared.graph.output.append(helper.make_tensor_value_info("centred_copy", TensorProto.FLOAT, [None, 33, 31, 3]))
    assert not fold_channel_flip(shared)  # another node reads the flipped, centred pixels
    wrong_order = _flip_model()
    wrong_order.graph.node[4].input[:] = ["channel0", "channel1", "channel2"]  # not a flip: nothing to fold
    assert not fold_channel_flip(wrong_order)


def _run_named(model: onnx.ModelProto, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["conv"], {"pixels": pixels})[0])
