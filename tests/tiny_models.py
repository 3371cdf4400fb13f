"""A tiny leuk-edge-compatible ONNX model built with onnx.helper: edge tests need no TensorFlow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_metadata(size: int, threshold: float = 0.5, resize: str = "area", scale: float = 1 / 255) -> dict:
    return {
        "schema_version": 1, "architecture": "cnn", "classes": ["hem", "all"], "threshold": threshold,
        "input": {"name": "image", "height": size, "width": size, "channels": 3, "layout": "NHWC",
                  "color": "RGB", "scale": scale, "resize": resize},
        "output": {"name": "p_all", "meaning": "P(all)"},
        "source_sha256": "0" * 64, "leuk_edge_version": "test", "created": "2026-01-01T00:00:00Z",
    }


def _p_all_graph() -> tuple[list, list]:
    """(initializers, nodes) of P(all) = sigmoid(w . mean_rgb + b) from the input `image` to the output `p_all`."""
    w = numpy_helper.from_array(np.array([[-4.0], [-8.0], [2.0]], np.float32), "w")
    b = numpy_helper.from_array(np.array([1.5], np.float32), "b")
    axes = numpy_helper.from_array(np.array([1, 2], np.int64), "axes")
    shape = numpy_helper.from_array(np.array([-1, 3], np.int64), "shape")
    nodes = [
        helper.make_node("ReduceMean", ["image", "axes"], ["m"], keepdims=1),
        helper.make_node("Reshape", ["m", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["z0"]),
        helper.make_node("Add", ["z0", "b"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p_all"]),
    ]
    return [w, b, axes, shape], nodes


TINY_OOD_METHOD = "tiny: 10 x mean green"


def _ood_graph() -> tuple[list, list]:
    """(initializers, nodes) of the scope score ood = 10 x mean green (0..10) from `flat` (the N x 3 mean RGB of
    `_p_all_graph`) to the output `ood` (N): black-background cells in purple score ~1, a green, white or grey
    image far more -- a test picks the threshold."""
    w = numpy_helper.from_array(np.array([[0.0], [10.0], [0.0]], np.float32), "w_ood")
    flat_n = numpy_helper.from_array(np.array([-1], np.int64), "flat_n")
    nodes = [helper.make_node("MatMul", ["flat", "w_ood"], ["ood_col"]),
             helper.make_node("Reshape", ["ood_col", "flat_n"], ["ood"])]
    return [w, flat_n], nodes


def scope_metadata(ood_threshold: float) -> dict:
    return {"scope": {"method": TINY_OOD_METHOD, "threshold": ood_threshold, "fitted_on": "train",
                      "accept_rate_val": 0.95}}


def make_tiny_onnx(path: str | Path, size: int = 32, threshold: float = 0.5, metadata: bool = True,
                   scale: float = 1 / 255, ood_threshold: float | None = None) -> Path:
    """P(all) = sigmoid(w . mean_rgb + b): darker / more purple cells score higher. Dynamic batch.
    With `ood_threshold`: a scope gate too -- output `ood` = 10 x mean green, metadata `scope` with that threshold."""
    inits, nodes = _p_all_graph()
    outputs = [helper.make_tensor_value_info("p_all", TensorProto.FLOAT, ["N", 1])]
    if ood_threshold is not None:
        ood_inits, ood_nodes = _ood_graph()
        inits, nodes = inits + ood_inits, nodes + ood_nodes
        outputs.append(helper.make_tensor_value_info("ood", TensorProto.FLOAT, ["N"]))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", size, size, 3])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    if metadata:
        meta = tiny_metadata(size, threshold, scale=scale)
        if ood_threshold is not None:
            meta.update(scope_metadata(ood_threshold))
        helper.set_model_props(model, {"leuk_edge": json.dumps(meta)})
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def make_tiny_cam_onnx(path: str | Path, size: int = 32, grid: int = 4, threshold: float = 0.5,
                       extra_metadata: dict | None = None, ood_threshold: float | None = None) -> Path:
    """`make_tiny_onnx`'s P(all), plus a second output `cam` (N x grid x grid): the darkness (1 - mean RGB)
    averaged over each grid cell, so a test knows exactly where the map is hot (where the image is dark)."""
    if size % grid:
        raise ValueError("size must be a multiple of grid")
    k = size // grid
    ch_axis = numpy_helper.from_array(np.array([1], np.int64), "ch_axis")
    cam_shape = numpy_helper.from_array(np.array([-1, grid, grid], np.int64), "cam_shape")
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    inits, nodes = _p_all_graph()
    nodes += [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("ReduceMean", ["nchw", "ch_axis"], ["gray"], keepdims=1),
        helper.make_node("Sub", ["one", "gray"], ["dark"]),
        helper.make_node("AveragePool", ["dark"], ["pooled"], kernel_shape=[k, k], strides=[k, k]),
        helper.make_node("Reshape", ["pooled", "cam_shape"], ["cam"]),
    ]
    outputs = [helper.make_tensor_value_info("p_all", TensorProto.FLOAT, ["N", 1]),
               helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["N", grid, grid])]
    inits = [*inits, ch_axis, cam_shape, one]
    scope = {}
    if ood_threshold is not None:
        ood_inits, ood_nodes = _ood_graph()
        inits, nodes = inits + ood_inits, nodes + ood_nodes
        outputs.append(helper.make_tensor_value_info("ood", TensorProto.FLOAT, ["N"]))
        scope = scope_metadata(ood_threshold)
    graph = helper.make_graph(
        nodes, "tiny_cam",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", size, size, 3])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    meta = {**tiny_metadata(size, threshold), "cam": {"output": "cam", "grid": [grid, grid]}, **scope,
            **(extra_metadata or {})}
    helper.set_model_props(model, {"leuk_edge": json.dumps(meta)})
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def make_corner_onnx(path: str | Path, size: int = 32, a: float = 6.0, b: float = -3.0) -> Path:
    """An orientation-dependent model: P(all) = sigmoid(a x mean of the top-left size/2 x size/2 corner + b), so each
    flip/rotation of an image gives another P(all) (the 8 views put each of the 4 corners top-left twice)."""
    half = size // 2
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             (("starts", [0, 0]), ("ends", [half, half]), ("axes", [1, 2]), ("col", [-1, 1]))]
    inits += [numpy_helper.from_array(np.array(a, np.float32), "a"), numpy_helper.from_array(np.array(b, np.float32),
                                                                                            "b")]
    nodes = [
        helper.make_node("Slice", ["image", "starts", "ends", "axes"], ["corner"]),
        helper.make_node("ReduceMean", ["corner"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["m", "a"], ["am"]),
        helper.make_node("Add", ["am", "b"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p"]),
        helper.make_node("Reshape", ["p", "col"], ["p_all"]),
    ]
    graph = helper.make_graph(nodes, "corner", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                              ["N", size, size, 3])],
                              [helper.make_tensor_value_info("p_all", TensorProto.FLOAT, ["N", 1])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    helper.set_model_props(model, {"leuk_edge": json.dumps(tiny_metadata(size))})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)
