"""Export a trained classifier to a self-describing ONNX file."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from maskwatch.models.mask_classifier import METADATA_KEY, ModelInfo


def export_onnx(model: nn.Module, path: str | Path, info: ModelInfo, opset: int = 17) -> Path:
    """Write ``model`` as ONNX (dynamic batch) with ``info`` in its metadata.

    Args:
        model: a module mapping (N, 3, S, S) normalised RGB to (N, C) logits.
        path: output file.
        info: the metadata read back by :class:`~maskwatch.models.mask_classifier.MaskClassifier`.

    Returns:
        The path written.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    x = torch.zeros(1, 3, info.input_size, info.input_size)
    buf = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, x, buf, input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset, dynamo=False,
        )
    proto = onnx.load_from_string(buf.getvalue())
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    proto.producer_name = "maskwatch"
    proto.doc_string = (f"maskwatch mask classifier: {info.backbone}, {info.input_size}px, "
                        f"classes {info.class_names}")
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path
