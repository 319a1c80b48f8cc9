"""Mask-aware enrolment: photos of a person -> templates in the gallery.

Every photo gives one plain template and ``synthetic_masks`` templates of the same
face wearing synthetic masks of several shapes and colours, drawn from its five
landmarks (:func:`~maskwatch.ops.synthmask.render_mask`). A masked face seen later
is matched against those masked templates, which are much closer to it than the
plain ones.

Everything is checked before anything is written: every photo must be readable and
show exactly one face (or the largest is taken when asked), so a refused enrolment
leaves the gallery as it was.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import cv2
import numpy as np

from maskwatch.errors import EnrolError, PersonExists, PersonNotFound
from maskwatch.gallery.base import Gallery
from maskwatch.gallery.records import Person, Template
from maskwatch.ops.image import ImageError, read_image, to_bgr_uint8
from maskwatch.ops.synthmask import MaskStyle, random_mask_style, render_mask
from maskwatch.types import Faces
from maskwatch.validation import validate_name

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Faces smaller than this (shorter box side, pixels) give weak templates: warned about.
SMALL_FACE_PX = 60
#: Thumbnail size, pixels of the longer side, and JPEG quality.
THUMBNAIL_PX = 96
THUMBNAIL_QUALITY = 85

# The first enrolment masks: common shapes and colours (BGR), so that even a few
# synthetic templates cover light, dark and white masks; later ones are random.
_ENROL_STYLES: tuple[MaskStyle, ...] = (
    MaskStyle("surgical", (226, 196, 150), "pleats", 1.0, True),   # light blue surgical
    MaskStyle("cloth", (30, 30, 32), "fabric", 1.0, True),         # black cloth
    MaskStyle("kn95", (236, 236, 236), "plain", 1.0, True),        # white KN95
    MaskStyle("n95", (225, 228, 230), "noise", 1.0, True),         # white N95 cup
    MaskStyle("surgical", (238, 238, 238), "pleats", 1.0, True),   # white surgical
    MaskStyle("cloth", (95, 45, 25), "plain", 1.0, True),          # navy cloth
)


class Detector(Protocol):
    def detect(self, image: np.ndarray) -> Faces: ...


class Embedder(Protocol):
    name: str
    version: str

    def embed(self, image: np.ndarray, faces: Faces) -> np.ndarray: ...


@dataclass(frozen=True)
class EnrolResult:
    """What an enrolment wrote.

    Attributes:
        person: the person as stored afterwards (counts include older templates
            when added to an existing person).
        photos: photos used.
        templates: templates written, synthetic ones included.
        synthetic_templates: templates with a synthetic mask.
        created: True when the person was new.
    """

    person: Person
    photos: int
    templates: int
    synthetic_templates: int
    created: bool


def enrolment_detector() -> Detector:
    """The detector enrolment uses (``people add`` and the web app's People page): YuNet
    at a lower confidence (0.5) than live video, since an enrolment photo is known to hold
    a face, on the photo shrunk to at most 1280 px."""
    from maskwatch.models.detector import YuNetDetector

    return YuNetDetector(score_threshold=0.5, max_side=1280)


def _photo_label(photo: object, index: int) -> str:
    if isinstance(photo, np.ndarray):
        return f"photo {index + 1} (image array)"
    return str(photo)


def _load(photo: str | os.PathLike[str] | np.ndarray, label: str) -> np.ndarray:
    if isinstance(photo, np.ndarray):
        if photo.ndim not in (2, 3) or photo.size == 0:
            raise EnrolError(f"{label} is not an image (array of shape {photo.shape})")
        try:
            return to_bgr_uint8(photo)
        except ImageError as exc:
            raise EnrolError(f"{label} is not a usable image: {exc}") from exc
    try:
        return read_image(photo)  # the pixel limit checked from the header, before decoding
    except ImageError as exc:  # ImageTooLarge included: one sentence, exit code 2 in the CLI
        reason = str(exc).removeprefix(f"{Path(photo)}: ")  # read_image names the file too
        raise EnrolError(f"cannot use {label}: {reason}") from exc


def _pick_face(faces: Faces, label: str, pick_largest: bool) -> Faces:
    if len(faces) == 0:
        raise EnrolError(f"no face found in {label}")
    if len(faces) > 1 and not pick_largest:
        raise EnrolError(f"{len(faces)} faces in {label}; use --largest to enrol the largest")
    face = faces[int(np.argmax(faces.widths * faces.heights))]
    if not face.has_landmarks:
        raise EnrolError("enrolment needs a detector that gives five facial landmarks (YuNet)")
    return face


def _thumbnail(image: np.ndarray, face: Faces) -> bytes:
    """A small JPEG crop of the face with a margin (20% of the box each side)."""
    x1, y1, x2, y2 = face.boxes[0]
    mx, my = 0.2 * (x2 - x1), 0.2 * (y2 - y1)
    h, w = image.shape[:2]
    crop = image[int(max(y1 - my, 0)):int(min(y2 + my, h)),
                 int(max(x1 - mx, 0)):int(min(x2 + mx, w))]
    scale = THUMBNAIL_PX / max(crop.shape[:2])
    if scale < 1:
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, THUMBNAIL_QUALITY])
    if not ok:  # pragma: no cover - encoding a valid crop does not fail
        raise EnrolError("could not encode the thumbnail")
    return buf.tobytes()


def _embed_each(embedder: Embedder, images: list[np.ndarray], face: Faces) -> list[np.ndarray]:
    """One (D,) embedding of the same face in each image (the photo and its masked copies)."""
    return [embedder.embed(image, face)[0] for image in images]


def mask_styles(count: int, rng: np.random.Generator) -> list[MaskStyle]:
    """``count`` mask looks for enrolment: the fixed common ones first, then random."""
    styles = list(_ENROL_STYLES[:count])
    while len(styles) < count:
        styles.append(random_mask_style(rng))
    return styles


@dataclass(frozen=True)
class PreparedEnrolment:
    """Templates made from photos of one person, not written anywhere yet.

    Attributes:
        name: the cleaned name (see :func:`~maskwatch.gallery.validate_name`).
        templates: plain and synthetic-mask templates, in photo order.
        thumbnail: JPEG bytes of the first photo's face, or None when not asked for.
        photos: photos used.
    """

    name: str
    templates: list[Template]
    thumbnail: bytes | None
    photos: int


def check_enrolment(gallery: Gallery, name: str, *,
                    add_to_existing: bool = False) -> tuple[str, bool]:
    """The cleaned name and whether that person is enrolled, before any photo is looked at
    (a taken name costs no model work).

    Raises:
        InvalidName, PersonExists (enrolled and not ``add_to_existing``), GalleryUnavailable.
    """
    clean = validate_name(name)
    try:
        gallery.get_person(clean)
        exists = True
    except PersonNotFound:
        exists = False
    if exists and not add_to_existing:
        raise PersonExists(f"a person named {clean!r} is already enrolled; add photos to them "
                           "with add_to_existing, or choose another name")
    return clean, exists


def prepare_enrolment(
    name: str,
    photos: Sequence[str | os.PathLike[str] | np.ndarray],
    *,
    detector: Detector,
    embedder: Embedder,
    pick_largest: bool = False,
    synthetic_masks: int = 4,
    rng_seed: int = 0,
    thumbnail: bool = False,
    run_model: Callable[[Callable[[], T]], T] | None = None,
) -> PreparedEnrolment:
    """The model half of :func:`enrol_photos`: photos -> templates (+ thumbnail).

    It reads no gallery, so a store that is slow or locked (SQLite waits up to its
    busy timeout for another writer) holds up only :func:`store_enrolment`. Arguments
    as in :func:`enrol_photos`, and:

    Args:
        run_model: runs one model step (a call without arguments: the detection of a
            photo, or the embeddings of its face, plain and masked) and returns its
            result; the web service passes one that runs it on its inference thread,
            so that reading photos and drawing masks (about 0.1 s per mask) happen on
            the caller's thread and live streams wait only for the models. Default:
            call it here.

    Raises:
        EnrolError: no photos, an unreadable photo, a photo without a face or with
            several faces (naming the photo). InvalidName: a bad name.
    """
    clean = validate_name(name)
    if not photos:
        raise EnrolError(f"no photos given to enrol {clean!r}")
    if synthetic_masks < 0:
        raise EnrolError("the number of synthetic masks cannot be negative")
    run: Callable[[Callable[[], Any]], Any] = run_model or (lambda step: step())

    # 1. check every photo before doing any work that is written
    chosen: list[tuple[str, np.ndarray, Faces]] = []
    for i, photo in enumerate(photos):
        label = _photo_label(photo, i)
        image = _load(photo, label)
        face = _pick_face(run(partial(detector.detect, image)), label, pick_largest)
        if float(face.sizes[0]) < SMALL_FACE_PX:
            log.warning("the face in %s is only %.0f px; a larger photo gives a better template",
                        label, float(face.sizes[0]))
        chosen.append((label, image, face))

    # 2. templates: the plain face, then the same face with synthetic masks drawn from
    # its landmarks; the face geometry is unchanged, so the original landmarks align it.
    rng = np.random.default_rng(rng_seed)
    templates: list[Template] = []
    for i, (label, image, face) in enumerate(chosen):
        source = Path(label).name if not isinstance(photos[i], np.ndarray) else f"array-{i + 1}"
        styles = mask_styles(synthetic_masks, rng)
        masked = [render_mask(image, face.landmarks[0], face.boxes[0], position="proper",
                              style=style, rng=rng) for style in styles]
        plain, *embs = run(partial(_embed_each, embedder, [image, *masked], face))
        templates.append(Template("", plain, embedder.name, str(embedder.version), False, False,
                                  source))
        for style, emb in zip(styles, embs, strict=True):
            templates.append(Template("", emb, embedder.name, str(embedder.version), True, True,
                                      f"{source}#mask-{style.shape}"))
    thumb = _thumbnail(chosen[0][1], chosen[0][2]) if thumbnail else None
    return PreparedEnrolment(clean, templates, thumb, len(chosen))


def store_enrolment(gallery: Gallery, prepared: PreparedEnrolment, *,
                    add_to_existing: bool = False) -> EnrolResult:
    """The store half of :func:`enrol_photos`: write prepared templates in one transaction.

    The person is looked up again here: enrolled (with ``add_to_existing``) -> the
    templates are added (the thumbnail is kept only for a new person); not enrolled ->
    a new person. A name enrolled meanwhile by someone else is :class:`PersonExists`.

    Raises:
        PersonExists, PersonNotFound (removed meanwhile), GalleryUnavailable (store down,
        or a SQLite file locked by another writer for longer than its busy timeout).
    """
    clean = prepared.name
    _, exists = check_enrolment(gallery, clean, add_to_existing=add_to_existing)
    templates = prepared.templates
    synthetic = sum(t.synthetic for t in templates)
    if exists:
        gallery.add_templates(clean, templates)
        person = gallery.get_person(clean)
    else:
        person = gallery.add_person(clean, thumbnail=prepared.thumbnail, templates=templates)
    log.info("enrolled %r from %d photos: %d templates (%d with synthetic masks)",
             clean, prepared.photos, len(templates), synthetic)
    return EnrolResult(person, prepared.photos, len(templates), synthetic, not exists)


def enrol_photos(
    gallery: Gallery,
    name: str,
    photos: Sequence[str | os.PathLike[str] | np.ndarray],
    *,
    detector: Detector,
    embedder: Embedder,
    pick_largest: bool = False,
    synthetic_masks: int = 4,
    rng_seed: int = 0,
    thumbnail: bool = False,
    add_to_existing: bool = False,
) -> EnrolResult:
    """Enrol a person from photos, with synthetic-mask templates for masked recognition.

    The same as :func:`check_enrolment`, :func:`prepare_enrolment` (the model work)
    and :func:`store_enrolment` (the write) in turn.

    Args:
        gallery: where to store the person.
        name: the person's name (see :func:`~maskwatch.gallery.validate_name`).
        photos: image files or BGR uint8 arrays, each showing the person's face.
        detector: gives faces with five landmarks (YuNet).
        embedder: has ``name``, ``version`` and ``embed(image, faces) -> (N, D)``.
        pick_largest: in a photo with several faces, take the largest; by default
            such a photo is refused.
        synthetic_masks: masked templates per photo (0 for none); shapes and colours
            vary: light blue surgical, black cloth, white KN95, white N95, then more.
        rng_seed: seed of the mask placement and look, so enrolment is repeatable.
        thumbnail: keep a small JPEG face crop (96 px) of the first photo of a new
            person; by default no image is stored.
        add_to_existing: add the templates to a person already enrolled under
            ``name`` (by default an existing name is refused).

    Returns:
        :class:`EnrolResult`.

    Raises:
        EnrolError: no photos, an unreadable photo, a photo without a face or with
            several faces (naming the photo); nothing is written.
        InvalidName, PersonExists: a bad or taken name; nothing is written.
        GalleryUnavailable: the store is down.
    """
    clean = validate_name(name)
    if not photos:
        raise EnrolError(f"no photos given to enrol {clean!r}")
    if synthetic_masks < 0:
        raise EnrolError("the number of synthetic masks cannot be negative")
    check_enrolment(gallery, clean, add_to_existing=add_to_existing)
    prepared = prepare_enrolment(clean, photos, detector=detector, embedder=embedder,
                                 pick_largest=pick_largest, synthetic_masks=synthetic_masks,
                                 rng_seed=rng_seed, thumbnail=thumbnail)
    return store_enrolment(gallery, prepared, add_to_existing=add_to_existing)
