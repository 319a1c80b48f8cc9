"""``maskwatch train``: transfer learning of the mask classifier, end to end.

One call of :func:`train` loads every source into run-time crops, splits them by
duplicate group, fine-tunes an ImageNet backbone, exports a self-describing ONNX
model and writes the run's report (classification report, confusion matrix, curves,
``metrics.json``) from the exported model's predictions on the held-out test split.
"""

from __future__ import annotations

import json
import logging
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from maskwatch.ops.crop import IMAGENET_MEAN, IMAGENET_STD, crops_to_tensor
from maskwatch.train.augment import AugmentConfig, augment_crop
from maskwatch.train.backbones import MaskNet
from maskwatch.train.data import CropMaker, SourceSpec, assign_splits, load_sources
from maskwatch.types import MASK_CLASSES

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Settings of one training run (all recorded in the model's metadata).

    Attributes:
        sources: data sources (see :class:`~maskwatch.train.data.SourceSpec`).
        out_dir: run folder; created, must be empty or absent.
        backbone, head: see :mod:`maskwatch.train.backbones`.
        input_size: classifier input side, pixels.
        margin: crop context per side, fraction of the face box's longer side.
        epochs: cap on epochs; early stopping usually ends sooner.
        patience: epochs without ``min_delta`` improvement of validation loss before stopping.
        min_delta: smallest validation-loss decrease that counts as improvement.
        lr: Adam learning rate of the head; ``backbone_lr_mult`` scales it for the backbone.
        freeze_blocks: leading backbone modules kept frozen (cheaper backward on 2 cores).
        batch_size: images per step.
        balance: how training faces are sampled: ``class`` gives each class equal mass
            (mask_incorrect is rare); ``source`` also spreads each class's mass over
            the sources in proportion to the square root of their counts, so a small
            real source (the 40-odd real below-the-nose faces in scenes) is seen more
            often next to a large synthetic one; ``none`` samples uniformly.
        label_smoothing: cross-entropy smoothing.
        seed: seeds the split, sampling, augmentation and initialisation.
        templates_dir: optional RGBA mask templates for synthetic masks.
        max_per_source: cap on crops per source (tiny test runs), 0 = all.
        low_light: ``(below, to)``: dark crops are gamma-brightened before the model,
            in training and at run time alike (recorded in the model file); None: not.
    """

    sources: list[SourceSpec]
    out_dir: Path
    backbone: str = "efficientnet_lite0"
    head: str = "pool"
    input_size: int = 112
    margin: float = 0.15
    epochs: int = 12
    patience: int = 3
    min_delta: float = 1e-3
    lr: float = 1e-3
    backbone_lr_mult: float = 0.1
    freeze_blocks: int = 0
    batch_size: int = 64
    balance: str = "class"
    label_smoothing: float = 0.05
    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    templates_dir: Path | None = None
    max_per_source: int = 0
    low_light: tuple[float, float] | None = (50.0, 100.0)
    threads: int = 2
    progress: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sources"] = [{"kind": s.kind, "path": str(s.path), "name": s.name} for s in self.sources]
        d["out_dir"] = str(self.out_dir)
        d["templates_dir"] = str(self.templates_dir) if self.templates_dir else None
        return d


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class CropDataset(torch.utils.data.Dataset):
    """Crops -> normalised tensors, augmented when ``augment`` is given."""

    def __init__(self, crops: np.ndarray, labels: np.ndarray, augment: AugmentConfig | None,
                 seed: int, low_light: tuple[float, float] | None = None) -> None:
        self.crops, self.labels, self.augment, self.seed = crops, labels, augment, seed
        self.low_light = low_light
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        crop = self.crops[i]
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, int(i)])
            crop = augment_crop(crop, rng, self.augment)
        x = crops_to_tensor(crop[None], low_light=self.low_light)[0]
        return torch.from_numpy(x), int(self.labels[i])


def sampling_weights(labels: np.ndarray, sources: np.ndarray, n_classes: int, *,
                     by_source: bool) -> np.ndarray:
    """Per-item sampling weights giving every class the same total mass.

    With ``by_source``, a class's mass is split over sources in proportion to the
    square root of each source's count of that class.
    """
    w = np.zeros(len(labels), np.float64)
    for c in range(n_classes):
        in_c = labels == c
        if not in_c.any():
            continue
        if not by_source:
            w[in_c] = 1.0 / in_c.sum()
            continue
        srcs, counts = np.unique(sources[in_c], return_counts=True)
        mass = np.sqrt(counts) / np.sqrt(counts).sum()
        for src, n, m in zip(srcs, counts, mass, strict=True):
            w[in_c & (sources == src)] = m / n
    return w / w.sum()


def _run_epoch(model: nn.Module, loader: Any, loss_fn: nn.Module, opt: Any, desc: str,
               progress: bool) -> tuple[float, float]:
    training = opt is not None
    model.train(training)
    total, correct, loss_sum = 0, 0, 0.0
    with torch.set_grad_enabled(training):
        bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=not progress)
        for x, y in bar:
            logits = model(x)
            loss = loss_fn(logits, y)
            if training:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            n = len(y)
            total += n
            loss_sum += float(loss.detach()) * n
            correct += int((logits.argmax(1) == y).sum())
            bar.set_postfix(loss=f"{loss_sum / total:.4f}", acc=f"{correct / total:.3f}")
    return loss_sum / max(total, 1), correct / max(total, 1)


def _freeze(model: MaskNet, n: int) -> None:
    """Freeze the first ``n`` modules of the backbone (stem counts as modules)."""
    if n <= 0:
        return
    mods: list[nn.Module] = []
    feats = model.features
    net = getattr(feats, "net", None)
    if net is not None:  # EfficientNet-Lite: stem conv, stem bn, blocks...
        mods = [net._conv_stem, net._bn0, *list(net._blocks)]
    elif hasattr(feats, "features"):
        mods = list(feats.features)
    for m in mods[:n]:
        for p in m.parameters():
            p.requires_grad_(False)
    model.frozen = mods[:n]


def train(config: TrainConfig) -> dict[str, Any]:
    """Run one training and return the metrics written to ``metrics.json``."""
    from maskwatch.evaluate.mask import evaluate_faceset
    from maskwatch.models.detector import YuNetDetector
    from maskwatch.models.mask_classifier import MaskClassifier, ModelInfo
    from maskwatch.train.export import export_onnx

    started = time.time()
    out = Path(config.out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new --out folder")
    torch.set_num_threads(max(1, config.threads))
    seed_everything(config.seed)

    # Training data uses the same detector settings as ``maskwatch evaluate``.
    detector = YuNetDetector(score_threshold=0.5, max_side=1024)
    maker = CropMaker(detector, config.input_size, config.margin)
    fs = load_sources(
        config.sources, maker, templates_dir=config.templates_dir, seed=config.seed,
        progress=config.progress, max_per_source=config.max_per_source,
    )
    fs = assign_splits(fs, fractions=config.split_fractions, seed=config.seed)
    out.mkdir(parents=True, exist_ok=True)
    data_summary = fs.summary()
    (out / "data.json").write_text(json.dumps({**data_summary, "skipped_files": fs.skipped},
                                              indent=2))

    tr, va = fs.subset(fs.splits == "train"), fs.subset(fs.splits == "val")
    if not len(tr) or not len(va):
        raise ValueError("too little data to split into train and validation sets")
    n_cls = len(MASK_CLASSES)
    model = MaskNet(config.backbone, n_cls, config.input_size, head=config.head)
    _freeze(model, config.freeze_blocks)

    train_ds = CropDataset(tr.crops, tr.labels, config.augment, config.seed, config.low_light)
    if config.balance not in ("class", "source", "none"):
        raise ValueError(f"unknown balance {config.balance!r}; use class, source or none")
    if config.balance != "none":
        w = sampling_weights(tr.labels, tr.sources, n_cls, by_source=config.balance == "source")
        sampler = torch.utils.data.WeightedRandomSampler(
            torch.as_tensor(w, dtype=torch.double), num_samples=len(tr), replacement=True,
            generator=torch.Generator().manual_seed(config.seed),
        )
        train_loader = torch.utils.data.DataLoader(train_ds, batch_size=config.batch_size,
                                                   sampler=sampler)
    else:
        train_loader = torch.utils.data.DataLoader(
            train_ds, batch_size=config.batch_size, shuffle=True,
            generator=torch.Generator().manual_seed(config.seed),
        )
    val_loader = torch.utils.data.DataLoader(CropDataset(va.crops, va.labels, None, config.seed,
                                                         config.low_light),
                                             batch_size=128)

    head_params = list(model.head.parameters())
    bb_params = [p for p in model.features.parameters() if p.requires_grad]
    opt = torch.optim.Adam(
        [{"params": head_params, "lr": config.lr},
         {"params": bb_params, "lr": config.lr * config.backbone_lr_mult}]
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    history: dict[str, Any] = {"train_loss": [], "val_loss": [], "train_acc": [], "val_acc": [],
                               "epoch_seconds": []}
    best_loss, best_state, best_epoch, waited = float("inf"), None, 0, 0
    for epoch in range(1, config.epochs + 1):
        t0 = time.time()
        train_ds.epoch = epoch
        tl, ta = _run_epoch(model, train_loader, loss_fn, opt,
                            f"epoch {epoch}/{config.epochs} train", config.progress)
        vl, vacc = _run_epoch(model, val_loader, loss_fn, None,
                              f"epoch {epoch}/{config.epochs} val", config.progress)
        for k, v in (("train_loss", tl), ("val_loss", vl), ("train_acc", ta), ("val_acc", vacc),
                     ("epoch_seconds", time.time() - t0)):
            history[k].append(round(float(v), 5))
        log.info("epoch %d: train loss %.4f acc %.4f, val loss %.4f acc %.4f",
                 epoch, tl, ta, vl, vacc)
        if vl < best_loss - config.min_delta:
            best_loss, best_epoch, waited = vl, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
            if waited >= config.patience:
                log.info("early stopping after epoch %d (best %d)", epoch, best_epoch)
                break
    history["epoch"] = list(range(1, len(history["train_loss"]) + 1))
    history["best_epoch"] = max(best_epoch - 1, 0)  # index into the per-epoch lists
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()

    info = ModelInfo(
        class_names=list(MASK_CLASSES),
        input_size=config.input_size,
        margin=config.margin,
        mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD),
        low_light=list(config.low_light) if config.low_light else [],
        backbone=config.backbone,
        head=config.head,
        data=data_summary,
        training={
            "config": config.to_dict(),
            "epochs_run": len(history["train_loss"]),
            "best_epoch": best_epoch,
            "seconds": round(time.time() - started, 1),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    )
    model_path = out / "model.onnx"
    export_onnx(model, model_path, info)

    # Report from the exported model, so the figures are those of the shipped file.
    clf = MaskClassifier(model_path, threads=config.threads)
    te = fs.subset(fs.splits == "test")
    agreement = onnx_torch_agreement(model, clf, te.crops[:64] if len(te) else tr.crops[:64])
    metrics = evaluate_faceset(clf, te, out, history=history,
                               extra={"onnx_torch_max_abs_diff": agreement, "split": "test"})
    # Store the headline figures inside the model file too.
    info.metrics = headline(metrics)
    export_onnx(model, model_path, info)
    return metrics


def onnx_torch_agreement(model: nn.Module, clf: Any, crops: np.ndarray) -> float:
    """Largest absolute difference of class probabilities, torch vs onnxruntime."""
    if not len(crops):
        return 0.0
    with torch.no_grad():
        x = torch.from_numpy(crops_to_tensor(crops, tuple(clf.info.mean), tuple(clf.info.std),
                                             clf.low_light))
        p_torch = torch.softmax(model(x), 1).numpy()
    p_onnx = clf.predict_crops(crops)
    return float(np.abs(p_torch - p_onnx).max())


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The few figures worth keeping in the model file."""
    out: dict[str, Any] = {}
    for name, m in metrics.get("by_source", {}).items():
        out[name] = {k: m.get(k) for k in ("n", "accuracy", "two_class_accuracy", "macro_f1")}
        if "min_size_32" in m:
            out[name]["min_size_32"] = m["min_size_32"]
    out["all"] = {k: metrics.get(k) for k in ("n", "accuracy", "two_class_accuracy", "macro_f1")}
    return out
