"""The gallery store: people and their face templates, with their events and matchers.

:class:`Gallery` is the interface every store implements (:mod:`~maskwatch.gallery.sqlite`,
:mod:`~maskwatch.gallery.mongo`). It holds the checks that every store shares for people
and templates (name validation from :mod:`maskwatch.validation`, embedder separation)
and is composed of one part per job:

- the records it stores: :mod:`maskwatch.gallery.records` (:class:`Person`,
  :class:`Template`, :class:`PersonRecord`);
- the events of the same store: :class:`~maskwatch.gallery.events.EventStoreMixin`;
- the matcher cache and the engine's live matcher:
  :class:`~maskwatch.gallery.matching.MatcherCacheMixin`;
- export and import files: :mod:`maskwatch.gallery.export`.

A store implements a few primitives (here, and in the two mixins), each of which is
atomic: either all of it is written or none of it. Every write to people or templates
bumps the store's change stamp, which the cached matchers watch.

This module imports only leaves (:mod:`maskwatch.errors`, :mod:`maskwatch.validation`,
:mod:`maskwatch.recognition` through the matcher) and the gallery modules above: the
event writer (:mod:`maskwatch.events`) depends on a store, never the reverse.
"""

from __future__ import annotations

import logging
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from maskwatch.errors import GalleryError, PersonExists, PersonNotFound
from maskwatch.gallery.events import EventStoreMixin
from maskwatch.gallery.export import read_export, write_export
from maskwatch.gallery.matching import MatcherCacheMixin
from maskwatch.gallery.records import (
    Person,
    PersonRecord,
    Template,
    check_templates,
    new_person_id,
)
from maskwatch.validation import validate_name

log = logging.getLogger(__name__)

#: How to re-enrol, quoted in messages about templates of another embedder.
REENROL_HINT = "re-enrol them with `maskwatch people add NAME PHOTO...`"


def mask_url_password(url: str) -> str:
    """``scheme://user:***@host/...``: a URL fit for messages and logs."""
    return re.sub(r"(://[^/@:]*:)[^@/]*@", r"\1***@", url)


class Gallery(EventStoreMixin, MatcherCacheMixin, ABC):
    """People and their face templates in one store, with their events and matchers.

    Safe to share between threads; several processes may open the same store. Methods
    raise :class:`GalleryError` subclasses with one clear sentence:
    :class:`InvalidName`, :class:`PersonExists`, :class:`PersonNotFound`, and
    :class:`GalleryUnavailable` when the store cannot be reached. A failed write
    leaves the store as it was. The events are those of
    :class:`~maskwatch.gallery.events.EventStoreMixin` (:meth:`add_events`,
    :meth:`query_events`, ...), the matchers those of
    :class:`~maskwatch.gallery.matching.MatcherCacheMixin` (:meth:`matcher`,
    :meth:`search`, :meth:`live_matcher`).

    Attributes:
        location: where the store is, for messages (a file path, or a URL with the
            password masked).
    """

    location: str = ""

    # ------------------------------------------------------------------ primitives
    # Each is atomic. Names given to them are already validated. The events' primitives
    # are declared by EventStoreMixin, ``change_stamp`` and ``_templates`` (every
    # template of one embedder) by MatcherCacheMixin.

    @abstractmethod
    def _write_people(self, records: Sequence[PersonRecord], replace: bool) -> None:
        """Create people with their templates. Existing names: :class:`PersonExists`,
        or with ``replace`` the old person and all their templates are removed first."""

    @abstractmethod
    def _add_templates(self, name: str, templates: Sequence[Template]) -> None:
        """Append templates to an existing person (:class:`PersonNotFound` if absent)."""

    @abstractmethod
    def _people(self, name: str | None, thumbnails: bool) -> list[Person]:
        """All people sorted by name, or the one named ``name`` ([] if absent)."""

    @abstractmethod
    def _rename(self, old: str, new: str) -> None:
        """Rename (:class:`PersonNotFound`, :class:`PersonExists`)."""

    @abstractmethod
    def _remove(self, name: str) -> int:
        """Delete the person and every template of theirs; number of templates deleted."""

    @abstractmethod
    def _templates_of(self, name: str) -> list[Template]:
        """Every template of one person, in insertion order ([] if absent)."""

    @abstractmethod
    def _embedder_counts(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        """(embedder, version) -> (people, templates, dimension)."""

    @abstractmethod
    def _dim(self, embedder: str, embedder_version: str) -> int | None:
        """Dimension of this embedder's stored templates, None when there are none."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the object cannot be used afterwards."""

    # ------------------------------------------------------------------ people

    def add_person(self, name: str, *, thumbnail: bytes | None = None,
                   templates: Sequence[Template] = ()) -> Person:
        """Enrol a new person, with their first templates written in the same transaction.

        Args:
            name: unique name (see :func:`~maskwatch.validation.validate_name`).
            thumbnail: optional JPEG bytes of a small face crop; None keeps no photo.
            templates: templates to store with the person (all or nothing).

        Returns:
            The new :class:`Person`.

        Raises:
            InvalidName, PersonExists, GalleryError (bad templates), GalleryUnavailable.
        """
        clean = validate_name(name)
        checked = check_templates(templates)
        self._check_dims(checked)
        if thumbnail is not None and not isinstance(thumbnail, (bytes, bytearray)):
            raise GalleryError("a thumbnail must be image bytes (JPEG)")
        person = Person(new_person_id(), clean, time.time(), len(checked),
                        sum(t.synthetic for t in checked), bytes(thumbnail) if thumbnail else None)
        self._write_people([PersonRecord(person, checked)], replace=False)
        log.info("enrolled %r with %d templates in %s", clean, len(checked), self.location)
        return person

    def add_templates(self, name: str, templates: list[Template]) -> int:
        """Add templates to an enrolled person, all in one transaction.

        Returns:
            The number of templates added.

        Raises:
            InvalidName, PersonNotFound, GalleryError (bad templates), GalleryUnavailable.
        """
        clean = validate_name(name, existing=True)
        checked = check_templates(templates)
        if not checked:
            if not self._people(clean, False):
                raise PersonNotFound(f"no person named {clean!r} is enrolled")
            return 0
        self._check_dims(checked)
        self._add_templates(clean, checked)
        return len(checked)

    def list_people(self, *, thumbnails: bool = False) -> list[Person]:
        """Everyone enrolled, sorted by name; thumbnails are loaded only when asked."""
        return self._people(None, thumbnails)

    def get_person(self, name: str) -> Person:
        """The person named ``name``, thumbnail included (:class:`PersonNotFound`)."""
        clean = validate_name(name, existing=True)
        found = self._people(clean, True)
        if not found:
            raise PersonNotFound(f"no person named {clean!r} is enrolled")
        return found[0]

    def rename(self, old: str, new: str) -> Person:
        """Give a person a new name; their templates follow. Returns the renamed person."""
        old_c, new_c = validate_name(old, existing=True), validate_name(new)
        if old_c != new_c:
            self._rename(old_c, new_c)
        return self.get_person(new_c)

    def remove_person(self, name: str) -> int:
        """Delete a person and everything about them (templates, thumbnail, events).

        Returns:
            The number of templates deleted.

        Raises:
            InvalidName, PersonNotFound, GalleryUnavailable.
        """
        clean = validate_name(name, existing=True)
        removed = self._remove(clean)
        log.info("removed %r and %d templates from %s", clean, removed, self.location)
        return removed

    def templates_of(self, name: str) -> list[Template]:
        """Every template of one person (:class:`PersonNotFound`)."""
        clean = validate_name(name, existing=True)
        if not self._people(clean, False):
            raise PersonNotFound(f"no person named {clean!r} is enrolled")
        return self._templates_of(clean)

    # ------------------------------------------------------------------ templates and search

    def templates(self, embedder: str,
                  embedder_version: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every template made by one embedder: the input of a matcher.

        Returns:
            ``(names, embeddings, masked)``: (T,) object array of person names,
            (T, D) float32 embeddings, (T,) bool masked flags. Templates of other
            embedders or versions are never included.
        """
        return self._templates(str(embedder), str(embedder_version))

    def embedders_in_use(self) -> dict[tuple[str, str], int]:
        """(embedder, version) -> number of people with templates of it."""
        return {k: v[0] for k, v in self._embedder_counts().items()}

    def other_embedders_message(self, embedder: str, embedder_version: str,
                                reenrol_hint: str = REENROL_HINT) -> str | None:
        """A sentence about people whose templates this embedder cannot match, or None.

        Example: ``"3 people were enrolled with another embedder (arcface v2) and will
        not be recognised: re-enrol them with `maskwatch people add NAME PHOTO...`"``;
        ``reenrol_hint`` replaces the part after the colon (the command line passes
        one naming ``--add --embedder``).
        """
        others = sorted(k for k in self._embedder_counts() if k != (embedder, embedder_version))
        if not others:
            return None
        people_other = self._people_without(embedder, embedder_version)
        if not people_other:
            return None
        which = ", ".join(f"{n} v{v}" for n, v in others)
        word = "person was" if people_other == 1 else "people were"
        return (f"{people_other} {word} enrolled with another embedder ({which}) and will not be "
                f"recognised: {reenrol_hint}")

    def _people_without(self, embedder: str, embedder_version: str) -> int:
        """People with no template of this embedder (they cannot be recognised)."""
        names = set(self._templates(embedder, embedder_version)[0].tolist())
        return sum(1 for p in self._people(None, False) if p.templates and p.name not in names)

    def _check_dims(self, templates: Sequence[Template]) -> None:
        for key in sorted({(t.embedder, t.embedder_version) for t in templates}):
            size = next(t.embedding.size for t in templates
                        if (t.embedder, t.embedder_version) == key)
            have = self._dim(*key)
            if have is not None and have != size:
                raise GalleryError(f"{key[0]} v{key[1]} templates in this gallery have {have} "
                                   f"dimensions, the new ones {size}")

    # ------------------------------------------------------------------ export / import

    def export(self, path: str | os.PathLike[str]) -> int:
        """Write every person and template to a JSON-lines file (events are not exported),
        in the format of :mod:`maskwatch.gallery.export`.

        The file is written to a temporary name and renamed, so a failed export
        leaves no partial file.

        Returns:
            The number of people written.
        """
        return write_export(path, self.list_people(thumbnails=True), self._templates_of)

    def import_(self, path: str | os.PathLike[str], *, replace: bool = False) -> int:
        """Read a file written by :meth:`export` into this gallery, all or nothing.

        Args:
            path: the export file.
            replace: replace people who are already enrolled (with all their
                templates; their events stay theirs); by default any name already
                enrolled refuses the import.

        Returns:
            The number of people imported.

        Raises:
            GalleryError: unreadable or malformed file (naming the line), duplicate
                names in the file; PersonExists: names already enrolled.
        """
        records = read_export(path)
        for rec in records:
            self._check_dims(rec.templates)
        if not replace:
            existing = {p.name for p in self._people(None, False)}
            clash = [r.person.name for r in records if r.person.name in existing]
            if clash:
                more = f" and {len(clash) - 3} more" if len(clash) > 3 else ""
                raise PersonExists(
                    f"{', '.join(repr(n) for n in clash[:3])}{more} already enrolled; "
                    "nothing was imported (use replace to overwrite them)")
        self._write_people(records, replace=replace)
        log.info("imported %d people from %s into %s", len(records), path, self.location)
        return len(records)

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


