"""Training and evaluation data: face crops from any mix of sources.

Three kinds of source, all turned into the same crops the classifier sees live
(the detector's box plus the model's margin, through :mod:`maskwatch.ops.crop`):

- ``folder``: one folder per class (``with_mask/``, ``without_mask/``, optional
  ``mask_incorrect/``), the layout of the Kaggle face-mask data. Images are often
  already face crops: the detector runs on a padded copy and the whole image is the
  fallback when it finds nothing.
- ``voc``: scenes with PASCAL VOC boxes (``labels/*.xml`` beside ``images/``, or
  ``Annotations/`` beside ``JPEGImages/``), matched to images by file stem. Each
  labelled face takes the detector's box when the detector finds it (IoU >= 0.4),
  else the labelled box.
- ``synthetic``: unmasked faces in ``<person>/<images>`` folders (LFW style). Each
  photo gives an unmasked crop, one with a mask rendered from its landmarks, two with
  masks worn below the nose (two styles: the scarcest class, and the one that matters
  most; placed anywhere from under the nostrils to pulled down onto the chin) and one
  with the mouth covered by something that is not a mask (a hand, another head, a cup:
  :mod:`maskwatch.ops.occlude`), labelled ``without_mask``.
- ``covered``: the same folders, each photo with its mouth covered by the occluder
  shapes kept back from training (a fist, a phone, a book) or another person's head,
  all ``without_mask``: the held-out check of hard negatives, meant for people no
  training step saw (``covered:../shared/datasets/lfw-train/images``).

Nothing here imports torch: ``maskwatch evaluate`` uses it with the runtime only.
"""

from __future__ import annotations

import hashlib
import logging
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from maskwatch.ops.boxes import iou_matrix
from maskwatch.ops.crop import face_crop
from maskwatch.ops.image import ImageError, list_files, list_images, read_image
from maskwatch.types import MASK_CLASSES

log = logging.getLogger(__name__)

#: Folder and VOC label names accepted for each class.
CLASS_ALIASES: dict[str, str] = {
    "with_mask": "with_mask",
    "mask": "with_mask",
    "masked": "with_mask",
    "without_mask": "without_mask",
    "no_mask": "without_mask",
    "nomask": "without_mask",
    "unmasked": "without_mask",
    "mask_incorrect": "mask_incorrect",
    "mask_weared_incorrect": "mask_incorrect",
    "mask_worn_incorrectly": "mask_incorrect",
    "incorrect_mask": "mask_incorrect",
}

SOURCE_KINDS = ("folder", "voc", "synthetic", "covered")


class DataError(ValueError):
    """A dataset that cannot be used: missing, empty, or without classes or labels."""


@dataclass
class FaceSet:
    """Face crops with their labels and bookkeeping, one array per field.

    Attributes:
        crops: (N, S, S, 3) BGR uint8 crops, cut as at run time.
        labels: (N,) int class index into ``class_names``.
        sizes: (N,) face size (shorter side of the box) in the source image, pixels.
        groups: (N,) str; items sharing a group (duplicates, one scene, one person)
            always land in the same split.
        sources: (N,) str source name.
        paths: (N,) str image path.
        splits: (N,) str split name, filled by the splitter ("" before).
        detected: (N,) bool: the crop's box came from the face detector.
    """

    crops: np.ndarray
    labels: np.ndarray
    sizes: np.ndarray
    groups: np.ndarray
    sources: np.ndarray
    paths: np.ndarray
    detected: np.ndarray
    splits: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="<U8"))
    class_names: tuple[str, ...] = MASK_CLASSES
    skipped: list[dict[str, str]] = field(default_factory=list)
    duplicate_groups: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, keep: np.ndarray) -> FaceSet:
        keep = np.asarray(keep)
        return FaceSet(
            crops=self.crops[keep],
            labels=self.labels[keep],
            sizes=self.sizes[keep],
            groups=self.groups[keep],
            sources=self.sources[keep],
            paths=self.paths[keep],
            detected=self.detected[keep],
            splits=self.splits[keep] if len(self.splits) else self.splits,
            class_names=self.class_names,
            skipped=self.skipped,
            duplicate_groups=self.duplicate_groups,
        )

    @staticmethod
    def concatenate(items: list[FaceSet], size: int) -> FaceSet:
        items = [x for x in items if len(x)]
        skipped = [s for x in items for s in x.skipped]
        dups: dict[str, int] = {}
        for x in items:
            dups.update(x.duplicate_groups)
        if not items:
            return FaceSet(
                crops=np.zeros((0, size, size, 3), np.uint8), labels=np.zeros(0, np.int64),
                sizes=np.zeros(0, np.float32), groups=np.zeros(0, "<U64"),
                sources=np.zeros(0, "<U64"), paths=np.zeros(0, "<U256"),
                detected=np.zeros(0, bool), skipped=skipped,
            )
        cat = lambda name: np.concatenate([getattr(x, name) for x in items])  # noqa: E731
        splits = (cat("splits") if all(len(x.splits) == len(x) for x in items)
                  else np.zeros(0, "<U8"))
        return FaceSet(
            crops=cat("crops"), labels=cat("labels"), sizes=cat("sizes"), groups=cat("groups"),
            sources=cat("sources"), paths=cat("paths"), detected=cat("detected"), splits=splits,
            skipped=skipped, duplicate_groups=dups,
        )

    def summary(self) -> dict[str, Any]:
        """Counts per source, split and class, for reports and model metadata."""
        out: dict[str, Any] = {"n": int(len(self)), "skipped": len(self.skipped), "sources": {}}
        for src in sorted(set(self.sources.tolist())):
            sel = self.sources == src
            entry: dict[str, Any] = {
                "n": int(sel.sum()),
                "classes": {self.class_names[k]: int(v)
                            for k, v in sorted(Counter(self.labels[sel].tolist()).items())},
                "detector_boxes": int(self.detected[sel].sum()),
            }
            if src in self.duplicate_groups:
                entry["duplicate_groups"] = self.duplicate_groups[src]
            if len(self.splits):
                entry["splits"] = {
                    sp: {self.class_names[k]: int(v)
                         for k, v in sorted(Counter(
                             self.labels[sel & (self.splits == sp)].tolist()).items())}
                    for sp in ("train", "val", "test")
                }
            out["sources"][src] = entry
        return out


@dataclass
class SourceSpec:
    """One data source: ``kind`` in SOURCE_KINDS, a folder, and a name for reports."""

    kind: str
    path: Path
    name: str = ""

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.kind not in SOURCE_KINDS:
            raise DataError(f"unknown source kind {self.kind!r}; "
                            f"use one of {', '.join(SOURCE_KINDS)}")
        if not self.name:
            base = self.path.resolve()
            if base.name in ("images", "JPEGImages") and base.parent.name:
                base = base.parent
            self.name = f"{self.kind}:{base.name}"

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        """Parse ``KIND:PATH`` (``folder:data/masks``); a bare path guesses the kind."""
        kind, sep, rest = text.partition(":")
        if sep and kind in SOURCE_KINDS:
            return cls(kind, Path(rest))
        return cls(guess_kind(Path(text)), Path(text))


def guess_kind(path: Path) -> str:
    """``voc`` when the folder has VOC xml labels, else ``folder``."""
    if (path / "labels").is_dir() or (path / "Annotations").is_dir():
        return "voc"
    return "folder"


def _class_folders(root: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        cls = CLASS_ALIASES.get(sub.name.lower())
        if cls:
            found.setdefault(cls, []).append(sub)
    return found


def check_source(spec: SourceSpec) -> None:
    """Raise :class:`DataError` with one clear sentence when a source is unusable."""
    p = spec.path
    if not p.exists():
        raise DataError(f"{p}: no such folder")
    if not p.is_dir():
        raise DataError(f"{p}: not a folder")
    if spec.kind == "folder":
        folders = _class_folders(p)
        if not folders:
            raise DataError(
                f"{p}: no class folders; expected with_mask/, without_mask/ "
                "and optionally mask_incorrect/"
            )
        if not any(list_files(f) for fs in folders.values() for f in fs):
            raise DataError(f"{p}: the class folders hold no images")
    elif spec.kind == "voc":
        img_dir, lbl_dir = _voc_dirs(p)
        if lbl_dir is None or not any(lbl_dir.glob("*.xml")):
            raise DataError(f"{p}: no VOC labels; expected labels/*.xml or Annotations/*.xml")
        if img_dir is None or not list_images(img_dir):
            raise DataError(f"{p}: no images; expected images/ or JPEGImages/")
    elif spec.kind in ("synthetic", "covered"):
        people = [d for d in p.iterdir() if d.is_dir()]
        if not people or not any(list_images(d) for d in people):
            raise DataError(f"{p}: expected one folder of photos per person (LFW layout)")


def _voc_dirs(root: Path) -> tuple[Path | None, Path | None]:
    img = next((root / n for n in ("images", "JPEGImages") if (root / n).is_dir()), None)
    lbl = next((root / n for n in ("labels", "Annotations") if (root / n).is_dir()), None)
    return img, lbl


def parse_voc(xml_path: Path) -> list[tuple[str, np.ndarray]]:
    """``(class, box xyxy)`` for each object of a VOC file whose class is known."""
    root = ET.parse(xml_path).getroot()
    out = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip().lower()
        cls = CLASS_ALIASES.get(name)
        bb = obj.find("bndbox")
        if cls is None or bb is None:
            continue
        box = np.array([float(bb.findtext(k) or 0) for k in ("xmin", "ymin", "xmax", "ymax")],
                       np.float32)
        if box[2] > box[0] and box[3] > box[1]:
            out.append((cls, box))
    return out


class CropMaker:
    """Cuts training crops with the run-time detector and crop code.

    Args:
        detector: an object with ``detect(image) -> Faces`` (YuNet by default).
        size, margin: the classifier's input size and crop margin.
    """

    def __init__(self, detector: Any, size: int, margin: float) -> None:
        self.detector = detector
        self.size = size
        self.margin = margin

    def largest_face(self, image: np.ndarray,
                     pad_fraction: float = 0.25) -> tuple[np.ndarray, bool]:
        """(box, detected) of the largest face, detected on a padded copy.

        Padding gives the detector context when the face fills the whole image.
        Falls back to a box whose crop shows the whole image (detected False).
        """
        h, w = image.shape[:2]
        pad = int(round(max(h, w) * pad_fraction))
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT,
                                    value=(127, 127, 127))
        faces = self.detector.detect(padded)
        if len(faces):
            i = int(np.argmax(faces.widths * faces.heights))
            return faces.boxes[i] - np.array([pad, pad, pad, pad], np.float32), True
        side = max(h, w) / (1.0 + 2.0 * self.margin)
        cx, cy = w / 2.0, h / 2.0
        return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2],
                        np.float32), False

    def crop(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        return face_crop(image, box, self.size, self.margin)


def _empty_lists() -> dict[str, list[Any]]:
    return {k: [] for k in ("crops", "labels", "sizes", "groups", "sources", "paths", "detected")}


def _to_faceset(rows: dict[str, list[Any]], size: int, skipped: list[dict[str, str]]) -> FaceSet:
    n = len(rows["labels"])
    return FaceSet(
        crops=np.stack(rows["crops"]) if n else np.zeros((0, size, size, 3), np.uint8),
        labels=np.asarray(rows["labels"], np.int64),
        sizes=np.asarray(rows["sizes"], np.float32),
        groups=np.asarray(rows["groups"], dtype=str) if n else np.zeros(0, "<U64"),
        sources=np.asarray(rows["sources"], dtype=str) if n else np.zeros(0, "<U64"),
        paths=np.asarray(rows["paths"], dtype=str) if n else np.zeros(0, "<U256"),
        detected=np.asarray(rows["detected"], bool),
        skipped=skipped,
    )


def _evenly(items: list[Any], limit: int) -> list[Any]:
    """At most ``limit`` items spread evenly over the (class-sorted) list: a
    deterministic, roughly stratified subset for quick runs."""
    if limit <= 0 or len(items) <= limit:
        return items
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def _read(path: Path, skipped: list[dict[str, str]]) -> np.ndarray | None:
    try:
        return read_image(path)
    except ImageError as exc:
        skipped.append({"path": str(path), "reason": str(exc)})
        log.warning("skipped %s", exc)
        return None


def load_folder(spec: SourceSpec, maker: CropMaker, *, progress: bool = True,
                limit: int = 0) -> FaceSet:
    """Crops from a folder-per-class dataset; groups by near-duplicate image hash."""
    from maskwatch.train.split import difference_hash, group_near_duplicates, perceptual_hash

    check_source(spec)
    rows = _empty_lists()
    skipped: list[dict[str, str]] = []
    phashes: list[int] = []
    dhashes: list[int] = []
    exact: list[str] = []
    items = [(cls, p) for cls, dirs in sorted(_class_folders(spec.path).items())
             for d in dirs for p in list_files(d)]
    items = _evenly(items, limit)
    for cls, path in tqdm(items, desc=f"crops {spec.name}", unit="img", disable=not progress):
        image = _read(path, skipped)
        if image is None:
            continue
        box, detected = maker.largest_face(image)
        rows["crops"].append(maker.crop(image, box))
        rows["labels"].append(MASK_CLASSES.index(cls))
        rows["sizes"].append(float(min(box[2] - box[0], box[3] - box[1])))
        rows["sources"].append(spec.name)
        rows["paths"].append(str(path))
        rows["detected"].append(detected)
        phashes.append(perceptual_hash(image))
        dhashes.append(difference_hash(image))
        exact.append(hashlib.sha1(
            cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA).tobytes()).hexdigest())
    groups = group_near_duplicates(
        np.asarray(phashes, np.uint64), np.asarray(dhashes, np.uint64), exact_keys=exact
    ) if phashes else np.zeros(0, np.int64)
    rows["groups"] = [f"{spec.name}#{g}" for g in groups]
    counts = Counter(groups.tolist())
    fs = _to_faceset(rows, maker.size, skipped)
    fs.duplicate_groups = {spec.name: sum(1 for c in counts.values() if c > 1)}
    return fs


def load_voc(
    spec: SourceSpec, maker: CropMaker, *, progress: bool = True, min_iou: float = 0.4,
    limit: int = 0,
) -> FaceSet:
    """Crops of every labelled face in VOC scenes; one group per scene (merged when
    two scenes are near duplicates of each other)."""
    from maskwatch.train.split import difference_hash, group_near_duplicates, perceptual_hash

    check_source(spec)
    img_dir, lbl_dir = _voc_dirs(spec.path)
    assert img_dir is not None and lbl_dir is not None
    images = {p.stem: p for p in list_images(img_dir)}
    rows = _empty_lists()
    skipped: list[dict[str, str]] = []
    scene_of_row: list[int] = []
    phashes: list[int] = []
    dhashes: list[int] = []
    xmls = _evenly(sorted(lbl_dir.glob("*.xml")), limit)
    for xml_path in tqdm(xmls, desc=f"crops {spec.name}", unit="scene", disable=not progress):
        img_path = images.get(xml_path.stem)
        if img_path is None:
            skipped.append({"path": str(xml_path), "reason": "no image with this file stem"})
            continue
        try:
            objects = parse_voc(xml_path)
        except ET.ParseError as exc:
            skipped.append({"path": str(xml_path), "reason": f"bad xml: {exc}"})
            continue
        image = _read(img_path, skipped)
        if image is None or not objects:
            continue
        faces = maker.detector.detect(image)
        gt = np.stack([b for _, b in objects])
        iou = iou_matrix(gt, faces.boxes)
        scene = len(phashes)
        phashes.append(perceptual_hash(image))
        dhashes.append(difference_hash(image))
        for i, (cls, gt_box) in enumerate(objects):
            j = int(np.argmax(iou[i])) if iou.shape[1] else -1
            use_det = j >= 0 and iou[i, j] >= min_iou
            box = faces.boxes[j] if use_det else gt_box
            rows["crops"].append(maker.crop(image, box))
            rows["labels"].append(MASK_CLASSES.index(cls))
            rows["sizes"].append(float(min(gt_box[2] - gt_box[0], gt_box[3] - gt_box[1])))
            rows["sources"].append(spec.name)
            rows["paths"].append(f"{img_path}#{i}")
            rows["detected"].append(bool(use_det))
            scene_of_row.append(scene)
    scene_groups = (group_near_duplicates(np.asarray(phashes, np.uint64),
                                          np.asarray(dhashes, np.uint64))
                    if phashes else np.zeros(0, np.int64))
    rows["groups"] = [f"{spec.name}#{scene_groups[s]}" for s in scene_of_row]
    fs = _to_faceset(rows, maker.size, skipped)
    counts = Counter(scene_groups.tolist())
    fs.duplicate_groups = {spec.name: sum(1 for c in counts.values() if c > 1)}
    return fs


#: Donor heads kept for :func:`maskwatch.ops.occlude.render_cover` (other people's).
_DONORS = 24


def load_synthetic(
    spec: SourceSpec,
    maker: CropMaker,
    *,
    templates_dir: Path | None = None,
    seed: int = 0,
    progress: bool = True,
    include_unmasked: bool = True,
    limit: int = 0,
) -> FaceSet:
    """Rendered variants of LFW-style faces: see the module docstring.

    ``synthetic`` gives unmasked, masked, below-the-nose (twice) and covered-not-masked
    crops; ``covered`` gives only covered crops, with the held-out occluder family.
    One group per person, so a person's photos never straddle splits. The heads used
    as covers come from other people of the same source.
    """
    from maskwatch.ops.occlude import COVER_KINDS, render_cover
    from maskwatch.ops.synthmask import BELOW_NOSE_DROP_RANGE, MaskTemplates, render_mask

    check_source(spec)
    covered_only = spec.kind == "covered"
    templates = MaskTemplates.from_folder(templates_dir) if templates_dir and not covered_only \
        else None
    rng = np.random.default_rng(seed)
    rows = _empty_lists()
    skipped: list[dict[str, str]] = []
    donors: list[tuple[str, np.ndarray, np.ndarray]] = []
    people = sorted(d for d in spec.path.iterdir() if d.is_dir())
    items = _evenly([(person.name, p) for person in people for p in list_images(person)], limit)
    for person, path in tqdm(items, desc=f"crops {spec.name}", unit="img", disable=not progress):
        image = _read(path, skipped)
        if image is None:
            continue
        faces = maker.detector.detect(image)
        if not len(faces) or not faces.has_landmarks:
            skipped.append({"path": str(path), "reason": "no face with landmarks found"})
            continue
        i = int(np.argmax(faces.widths * faces.heights))
        box, lm = faces.boxes[i], faces.landmarks[i]
        others = [(img, b) for who, img, b in donors if who != person]
        # The cover's kind is drawn here, just before the cover, as render_cover would
        # draw it (the same random sequence), so the held-out check reports each kind.
        kinds = [k for k in COVER_KINDS if k != "head" or others]
        variants: list[tuple[str, str, np.ndarray]] = []
        if covered_only:
            kind = str(rng.choice(kinds))
            variants.append(("without_mask", "covered", render_cover(
                image, lm, box, kind=kind, family="held_out", rng=rng, donors=others)))
        else:
            if include_unmasked:
                variants.append(("without_mask", "without_mask", image))
            variants.append(("with_mask", "with_mask", render_mask(
                image, lm, box, position="proper", rng=rng, templates=templates)))
            for tag in ("mask_incorrect", "mask_incorrect2"):
                variants.append(("mask_incorrect", tag, render_mask(
                    image, lm, box, position="below_nose", rng=rng, templates=templates,
                    below_nose_drop=BELOW_NOSE_DROP_RANGE)))
            kind = str(rng.choice(kinds))
            variants.append(("without_mask", "covered", render_cover(
                image, lm, box, kind=kind, family="train", rng=rng, donors=others)))
        donors.append((person, image, box))
        del donors[:-_DONORS]
        for cls, tag, img in variants:
            # Re-detect on the rendered image: the live detector sees the masked face.
            redet = maker.detector.detect(img) if img is not image else faces
            use = box
            detected = True
            if img is not image:
                iou = iou_matrix(box[None], redet.boxes)
                if iou.size and iou.max() >= 0.4:
                    use = redet.boxes[int(np.argmax(iou[0]))]
                else:
                    detected = False
            rows["crops"].append(maker.crop(img, use))
            rows["labels"].append(MASK_CLASSES.index(cls))
            rows["sizes"].append(float(min(use[2] - use[0], use[3] - use[1])))
            # The held-out check reports each kind of cover as a source of its own.
            rows["sources"].append(f"{spec.name}/{kind}" if covered_only else spec.name)
            rows["paths"].append(f"{path}#{tag}")
            rows["detected"].append(detected)
            rows["groups"].append(f"{spec.name}#{person}")
    return _to_faceset(rows, maker.size, skipped)


def load_sources(
    specs: list[SourceSpec],
    maker: CropMaker,
    *,
    templates_dir: Path | None = None,
    seed: int = 0,
    progress: bool = True,
    max_per_source: int = 0,
) -> FaceSet:
    """Load and concatenate every source (each checked first, so a bad path fails fast).

    ``max_per_source`` > 0 reads only that many images (scenes for VOC) per source,
    spread evenly over its classes: for quick runs and tests.
    """
    for spec in specs:
        check_source(spec)
    parts = []
    for spec in specs:
        if spec.kind == "folder":
            parts.append(load_folder(spec, maker, progress=progress, limit=max_per_source))
        elif spec.kind == "voc":
            parts.append(load_voc(spec, maker, progress=progress, limit=max_per_source))
        else:
            parts.append(load_synthetic(
                spec, maker, templates_dir=templates_dir, seed=seed, progress=progress,
                limit=max_per_source,
            ))
    fs = FaceSet.concatenate(parts, maker.size)
    if not len(fs):
        raise DataError("no usable face crops in the given data")
    return fs


def assign_splits(fs: FaceSet, *, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
                  seed: int = 0) -> FaceSet:
    """Split each source by group, stratified by class (see :mod:`maskwatch.train.split`)."""
    from maskwatch.train.split import group_split

    splits = np.empty(len(fs), dtype="<U8")
    for src in sorted(set(fs.sources.tolist())):
        sel = np.flatnonzero(fs.sources == src)
        _, group_ids = np.unique(fs.groups[sel], return_inverse=True)
        splits[sel] = group_split(group_ids, fs.labels[sel], fractions=fractions, seed=seed)
    fs.splits = splits
    return fs
