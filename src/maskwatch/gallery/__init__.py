"""Enrolled people and their face templates, in SQLite (default) or MongoDB.

    >>> from maskwatch.gallery import open_gallery
    >>> gallery = open_gallery()                       # ~/.local/share/maskwatch/gallery.sqlite3
    >>> gallery = open_gallery("mongodb://db:27017/maskwatch")

See :class:`~maskwatch.gallery.base.Gallery` for the operations; the same store keeps
the events of :mod:`maskwatch.events`. One module per job:

- :mod:`~maskwatch.gallery.records`: :class:`Person`, :class:`Template`, :class:`PersonRecord`;
- :mod:`~maskwatch.gallery.base`: :class:`Gallery`, the store of people and templates;
- :mod:`~maskwatch.gallery.events`: the events in the store (:class:`EventFilter`);
- :mod:`~maskwatch.gallery.matching`: the matcher cache and :class:`LiveMatcher`;
- :mod:`~maskwatch.gallery.export`: the export file (:func:`read_export`);
- :mod:`~maskwatch.gallery.sqlite`, :mod:`~maskwatch.gallery.mongo`: the two stores.

Their public names are re-exported here. The error family (:mod:`maskwatch.errors`), the
event record (:mod:`maskwatch.records`) and :func:`validate_name`
(:mod:`maskwatch.validation`) live in leaf modules and are re-exported here too.
"""

from __future__ import annotations

import os
from pathlib import Path

from maskwatch.errors import (
    GalleryError,
    GalleryUnavailable,
    InvalidName,
    PersonExists,
    PersonNotFound,
)
from maskwatch.gallery.base import REENROL_HINT, Gallery, mask_url_password
from maskwatch.gallery.events import MAX_BUCKETS, MAX_EVENTS_PAGE, EventFilter, event_filter
from maskwatch.gallery.export import EXPORT_FORMAT, EXPORT_VERSION, read_export, write_export
from maskwatch.gallery.matching import LiveMatcher
from maskwatch.gallery.records import (
    Person,
    PersonRecord,
    Template,
    check_templates,
    new_person_id,
)
from maskwatch.records import UNCLASSIFIED, UNKNOWN, Event
from maskwatch.validation import MAX_NAME_CHARS, MAX_SOURCE_CHARS, validate_name

__all__ = [
    "EXPORT_FORMAT", "EXPORT_VERSION", "MAX_BUCKETS", "MAX_EVENTS_PAGE", "MAX_NAME_CHARS",
    "MAX_SOURCE_CHARS", "REENROL_HINT", "UNCLASSIFIED", "UNKNOWN", "Event", "EventFilter",
    "Gallery", "GalleryError", "GalleryUnavailable", "InvalidName", "LiveMatcher", "Person",
    "PersonExists", "PersonNotFound", "PersonRecord", "Template", "check_templates",
    "default_gallery_path", "event_filter", "mask_url_password", "new_person_id", "open_gallery",
    "read_export", "validate_name", "write_export",
]

GALLERY_FILE = "gallery.sqlite3"


def default_gallery_path() -> Path:
    """Where the default SQLite gallery lives.

    ``$MASKWATCH_HOME/gallery.sqlite3`` when ``MASKWATCH_HOME`` is set, else
    ``$XDG_DATA_HOME/maskwatch/gallery.sqlite3`` (``XDG_DATA_HOME`` defaulting to
    ``~/.local/share``).
    """
    home = os.environ.get("MASKWATCH_HOME")
    if home:
        return Path(home).expanduser() / GALLERY_FILE
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data).expanduser() / "maskwatch" / GALLERY_FILE


def open_gallery(db: str | os.PathLike[str] | None = None) -> Gallery:
    """Open a gallery store.

    Args:
        db: ``None`` or ``""``: the SQLite file at :func:`default_gallery_path`; a file
            path or ``sqlite:///relative/path`` / ``sqlite:////absolute/path`` (the
            SQLAlchemy convention): that SQLite file, created when missing;
            ``mongodb://[user:password@]host:port/database`` or ``mongodb+srv://...``:
            MongoDB (needs pymongo; the server is first contacted by the first
            operation, which fails within seconds when it is down).

    Raises:
        GalleryError: an unknown URL scheme, a malformed URL, a file that is not a
            gallery, a path that cannot be created.
    """
    if db is None or str(db).strip() == "":
        from maskwatch.gallery.sqlite import SQLiteGallery

        return SQLiteGallery(default_gallery_path())
    spec = os.fspath(db).strip()
    low = spec.lower()
    if low.startswith(("mongodb://", "mongodb+srv://")):
        from maskwatch.gallery.mongo import MongoGallery

        return MongoGallery(spec)
    if low.startswith("sqlite:"):
        if not low.startswith("sqlite:///") or len(spec) <= len("sqlite:///"):
            raise GalleryError(f"{spec!r} is not a SQLite URL: write sqlite:///relative/path or "
                               "sqlite:////absolute/path")
        spec = spec[len("sqlite:///"):]
    elif "://" in spec:
        scheme = spec.split("://", 1)[0]
        raise GalleryError(f"unsupported gallery database {scheme!r}: use a file path, "
                           "sqlite:///path or mongodb://host:port/db")
    if spec == ":memory:":
        raise GalleryError("an in-memory gallery is not supported: give a file path")
    from maskwatch.gallery.sqlite import SQLiteGallery

    return SQLiteGallery(Path(spec))
