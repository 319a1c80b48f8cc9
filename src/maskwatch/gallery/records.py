"""The gallery's records of people: a person, a face template, and the two together.

A *person* is a unique name with an optional face thumbnail. A *template* is one
face embedding of that person, tagged with the embedder that made it (name and
version), whether the face was masked, and whether the mask was synthetic (drawn at
enrolment). Photos are never stored; a thumbnail only when the caller asks.

Plain data and the check every template passes before it is written
(:func:`check_templates`); the store itself is :class:`~maskwatch.gallery.base.Gallery`.
The event record is :class:`~maskwatch.records.Event`, in :mod:`maskwatch.records`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from maskwatch.errors import GalleryError


@dataclass(frozen=True)
class Person:
    """One enrolled person.

    Attributes:
        person_id: store-wide unique id (32 hex characters), stable across renames.
        name: unique display name (validated by :func:`~maskwatch.validation.validate_name`).
        created: enrolment time, seconds since the Unix epoch.
        templates: number of templates, synthetic ones included.
        synthetic_templates: how many of those were drawn with a synthetic mask.
        thumbnail: JPEG bytes of a small face crop, or None (the default: no photo
            is kept unless the user asks).
    """

    person_id: str
    name: str
    created: float
    templates: int = 0
    synthetic_templates: int = 0
    thumbnail: bytes | None = None


@dataclass(frozen=True)
class Template:
    """One face embedding of a person.

    Attributes:
        person_id: the owner's id; ignored when writing (the name given to the write
            decides the owner), filled when reading.
        embedding: (D,) float32 embedding, for SFace unit length, D = 128.
        embedder: name of the embedder that made it, e.g. ``"sface-2021dec-int8"``.
        embedder_version: its version string; templates only match probes of the
            same (embedder, embedder_version).
        masked: the face wears a mask (real or synthetic).
        synthetic: the mask was drawn at enrolment (:func:`~maskwatch.ops.synthmask.render_mask`).
        source: where it came from, e.g. the photo's file name (no directories).
    """

    person_id: str
    embedding: np.ndarray
    embedder: str
    embedder_version: str
    masked: bool = False
    synthetic: bool = False
    source: str = ""


@dataclass(frozen=True)
class PersonRecord:
    """A person and all their templates, as exported, imported and written at once."""

    person: Person
    templates: list[Template] = field(default_factory=list)


def new_person_id() -> str:
    return uuid.uuid4().hex


def check_templates(templates: Iterable[Template]) -> list[Template]:
    """Templates with float32 (D,) embeddings; :class:`GalleryError` for bad ones.

    Refused: non-finite or all-zero embeddings, empty embedder names, and templates
    of one embedder with different dimensions.
    """
    out: list[Template] = []
    dims: dict[tuple[str, str], int] = {}
    for t in templates:
        if not isinstance(t, Template):
            raise GalleryError(f"expected a Template, got {type(t).__name__}")
        emb = np.ascontiguousarray(np.asarray(t.embedding, dtype=np.float32).reshape(-1))
        if emb.size == 0 or not np.all(np.isfinite(emb)) or not np.any(emb):
            raise GalleryError("a template embedding must be a non-zero vector of finite numbers")
        if (not t.embedder or not isinstance(t.embedder, str)
                or not isinstance(t.embedder_version, str)):
            raise GalleryError("every template must name its embedder and embedder version")
        key = (t.embedder, t.embedder_version)
        if dims.setdefault(key, emb.size) != emb.size:
            raise GalleryError(f"templates of {key[0]} v{key[1]} have different dimensions "
                               f"({dims[key]} and {emb.size})")
        out.append(Template(t.person_id, emb, t.embedder, str(t.embedder_version), bool(t.masked),
                            bool(t.synthetic), str(t.source)[:500]))
    return out
