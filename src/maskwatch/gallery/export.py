"""The gallery export file: people and their templates as JSON lines (no events).

The first line is a header ``{"format": "maskwatch-gallery", "version": 1}``;
then one line per person: name, created, thumbnail (base64 JPEG or null) and
templates (embedding as base64 little-endian float32, embedder, version,
masked, synthetic, source). No photos, only thumbnails that were stored.

:func:`write_export` writes such a file and :func:`read_export` parses and checks one;
:meth:`Gallery.export <maskwatch.gallery.base.Gallery.export>` and
:meth:`Gallery.import_ <maskwatch.gallery.base.Gallery.import_>` use them. This module
imports only leaves and the people records (:mod:`maskwatch.gallery.records`).
"""

from __future__ import annotations

import base64
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from maskwatch.errors import GalleryError
from maskwatch.gallery.records import (
    Person,
    PersonRecord,
    Template,
    check_templates,
    new_person_id,
)
from maskwatch.validation import validate_name

#: Export file format tag and version (first line of an export).
EXPORT_FORMAT = "maskwatch-gallery"
EXPORT_VERSION = 1


def write_export(path: str | os.PathLike[str], people: Sequence[Person],
                 templates_of: Callable[[str], Sequence[Template]]) -> int:
    """Write ``people`` (thumbnails included) and their templates to an export file.

    The templates of each person are read with ``templates_of(name)`` while the file is
    written. The file is written to a temporary name and renamed, so a failed export
    leaves no partial file.

    Returns:
        The number of people written.

    Raises:
        GalleryError: the file cannot be written.
    """
    target = Path(path)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps({"format": EXPORT_FORMAT, "version": EXPORT_VERSION,
                                "people": len(people)}) + "\n")
            for p in people:
                rows = [{
                    "embedding": base64.b64encode(t.embedding.astype("<f4").tobytes())
                    .decode("ascii"),
                    "embedder": t.embedder, "embedder_version": t.embedder_version,
                    "masked": t.masked, "synthetic": t.synthetic, "source": t.source,
                } for t in templates_of(p.name)]
                f.write(json.dumps({
                    "name": p.name, "created": p.created,
                    "thumbnail": (base64.b64encode(p.thumbnail).decode("ascii")
                                  if p.thumbnail else None),
                    "templates": rows,
                }, ensure_ascii=False) + "\n")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GalleryError(f"cannot write the export file {target}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(people)


def read_export(path: str | os.PathLike[str]) -> list[PersonRecord]:
    """Parse and validate an export file completely (nothing is written).

    Raises:
        GalleryError: naming the file and line that is wrong.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise GalleryError(f"{p}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise GalleryError(f"cannot read {p}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not lines:
        raise GalleryError(f"{p} is empty, not a gallery export")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise GalleryError(f"{p} is not a maskwatch gallery export "
                           "(its first line lacks the format header)")
    if header.get("version") != EXPORT_VERSION:
        raise GalleryError(f"{p} is a version {header.get('version')} export; "
                           f"this maskwatch reads version {EXPORT_VERSION}")
    records: list[PersonRecord] = []
    seen: set[str] = set()
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name = validate_name(row["name"])
            created = float(row.get("created") or time.time())
            if not math.isfinite(created):
                raise ValueError("created is not a number")
            thumb = (base64.b64decode(row["thumbnail"], validate=True)
                     if row.get("thumbnail") else None)
            pid = new_person_id()
            temps = [Template(pid,
                              np.frombuffer(base64.b64decode(t["embedding"], validate=True),
                                            "<f4").astype(np.float32),
                              str(t["embedder"]), str(t["embedder_version"]),
                              bool(t.get("masked", False)), bool(t.get("synthetic", False)),
                              str(t.get("source", "")))
                     for t in row.get("templates", [])]
            temps = check_templates(temps)
        except GalleryError as exc:
            raise GalleryError(f"{p}, line {lineno}: {exc}") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GalleryError(f"{p}, line {lineno}: malformed person record ({exc})") from exc
        if name in seen:
            raise GalleryError(f"{p}, line {lineno}: the name {name!r} appears twice")
        seen.add(name)
        records.append(PersonRecord(Person(pid, name, created, len(temps),
                                           sum(t.synthetic for t in temps), thumb), temps))
    return records
