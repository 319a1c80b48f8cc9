"""The default gallery store: one SQLite file, no server.

WAL mode lets the engine read while the web app writes (and the other way round);
each thread gets its own connection, and writes take the write lock at once
(``BEGIN IMMEDIATE``) and wait up to ``busy_timeout_s`` for it. Every write is one
transaction, so nothing is ever half-written. ``secure_delete`` overwrites deleted
rows with zeros and a removal is followed by a WAL checkpoint, so a removed person's
name, thumbnail and templates do not linger in the file. The file and its folder are
created readable by the owner only: face templates are personal data.

Schema 2 added the ``events`` table, schema 3 its ``unknown_frames`` column (0 for the
events stored before); an older file is migrated in place (in one transaction) the first
time this version opens it, keeping its people and events.

The file is the one that was opened: its device and inode are checked (one ``stat``)
before every read and write and again just before every commit. When the file has been
deleted, or another file has taken its place, while maskwatch runs, SQLite would go on
writing to the deleted file (its open descriptors keep it alive) and everything written
from then on would vanish at the next restart; instead every operation raises
:class:`~maskwatch.errors.GalleryUnavailable` ("the gallery file ... was deleted
or replaced while maskwatch was running; ...") and nothing more is written to it: an
enrolment answers 503, events wait in their writer's memory (and in its spool at exit).

- The same file put back at the path (``mv`` back, a hard link): it is used again, as if
  nothing had happened.
- A different file at the path (a backup restored, a new gallery made by another
  process): not opened by this process; restart maskwatch to use it. Reopening under the
  running process is not done because its connections still hold the old file's WAL
  and shared-memory index, which SQLite names after the path: the new file would be read
  with the old file's journal, which SQLite documents as a cause of corruption
  (https://sqlite.org/howtocorrupt.html, "unlinking or renaming a database file while
  in use"). For the same reason a file should only be replaced together with its
  ``-wal`` and ``-shm`` files (a restart then opens it cleanly).
- The folder deleted or emptied: no new, empty gallery is started under the running
  process (its enrolments would silently be missing); a restart creates one, as at a
  first start.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from maskwatch.errors import GalleryError, GalleryUnavailable, PersonExists, PersonNotFound
from maskwatch.gallery.base import Gallery
from maskwatch.gallery.events import MAX_BUCKETS, EventFilter
from maskwatch.gallery.records import Person, PersonRecord, Template
from maskwatch.records import Event
from maskwatch.types import SHOWN_MASK_STATES

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', 1), ('stamp', 0);
CREATE TABLE IF NOT EXISTS people (
    id        TEXT PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE,
    created   REAL NOT NULL,
    thumbnail BLOB
);
CREATE TABLE IF NOT EXISTS templates (
    id               INTEGER PRIMARY KEY,
    person_id        TEXT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    embedder         TEXT NOT NULL,
    embedder_version TEXT NOT NULL,
    dim              INTEGER NOT NULL,
    embedding        BLOB NOT NULL,
    masked           INTEGER NOT NULL,
    synthetic        INTEGER NOT NULL,
    source           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS templates_by_embedder ON templates (embedder, embedder_version);
CREATE INDEX IF NOT EXISTS templates_by_person ON templates (person_id);
"""

# Migrations from schema N to N + 1, run in the opening transaction. person_id is no
# foreign key: the events of a person replaced by an import are handed to the new id,
# and remove() deletes them explicitly in its own transaction.
_MIGRATIONS = {
    1: """
CREATE TABLE IF NOT EXISTS events (
    id                    TEXT PRIMARY KEY,
    source                TEXT NOT NULL,
    track_id              INTEGER NOT NULL,
    started               REAL NOT NULL,
    ended                 REAL NOT NULL,
    frames                INTEGER NOT NULL,
    mask_state            TEXT,
    with_mask_frames      INTEGER NOT NULL,
    without_mask_frames   INTEGER NOT NULL,
    mask_incorrect_frames INTEGER NOT NULL,
    person_id             TEXT,
    best_similarity       REAL
);
CREATE INDEX IF NOT EXISTS events_by_ended ON events (ended, id);
CREATE INDEX IF NOT EXISTS events_by_source ON events (source, ended);
CREATE INDEX IF NOT EXISTS events_by_person ON events (person_id, ended);
CREATE INDEX IF NOT EXISTS events_by_mask ON events (mask_state, ended);
""",
    2: """
ALTER TABLE events ADD COLUMN unknown_frames INTEGER NOT NULL DEFAULT 0;
""",
}

_EVENT_COLUMNS = ("e.id, e.source, e.track_id, e.started, e.ended, e.frames, e.mask_state, "
                  "e.with_mask_frames, e.without_mask_frames, e.mask_incorrect_frames, "
                  "e.unknown_frames, p.name, e.best_similarity")


class SQLiteGallery(Gallery):
    """Gallery in one SQLite file.

    Args:
        path: the database file; created (with its folders) when missing.
        busy_timeout_s: how long, in seconds, a write waits for another writer
            before :class:`GalleryUnavailable` is raised.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 10.0) -> None:
        super().__init__()
        self.path = Path(path).expanduser()
        self.location = str(self.path)
        self.busy_timeout_s = float(busy_timeout_s)
        self._local = threading.local()
        self._cons: dict[int, tuple[threading.Thread, sqlite3.Connection]] = {}
        self._cons_lock = threading.Lock()
        self._closed = False
        self._file_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened
        if self.path.is_dir():
            raise GalleryError(f"{self.path} is a folder, not a gallery file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            st = os.stat(self.path)
        except OSError as exc:
            raise GalleryError(f"cannot create the gallery file {self.path}: "
                               f"{exc.strerror or exc}") from exc
        self._file_id = (st.st_dev, st.st_ino)
        con = self._con()
        with self._errors("open"):
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("%s: journal mode is %s, not WAL; readers may wait for writers",
                            self.path, mode)
            con.execute("BEGIN IMMEDIATE")
            try:
                # A new file is created at schema 1 and brought up by the same migrations;
                # only an existing file's upgrade is worth telling the user about.
                existed = con.execute(
                    "SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is not None
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        con.execute(stmt)
                version = con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
                while version in _MIGRATIONS and version < SCHEMA_VERSION:
                    for stmt in _MIGRATIONS[version].split(";"):
                        if stmt.strip():
                            con.execute(stmt)
                    version += 1
                    con.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (version,))
                    if existed:
                        log.info("%s: gallery schema migrated to version %d", self.path, version)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        if version != SCHEMA_VERSION:
            newer = " (it was written by a newer maskwatch)" if version > SCHEMA_VERSION else ""
            raise GalleryError(f"{self.path} has gallery schema {version}; this maskwatch knows "
                               f"schema {SCHEMA_VERSION}" + newer)

    # ------------------------------------------------------------------ connections

    def _check_file(self) -> None:
        """:class:`GalleryUnavailable` when the file at ``path`` is gone or is another file
        than the one opened (see the module docstring); one ``stat``, a few microseconds."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        except OSError:  # e.g. a folder made unreadable: SQLite reports that itself
            return
        if st is not None and (st.st_dev, st.st_ino) == self._file_id:
            return
        what = ("put it back, or restart maskwatch to start a new gallery there" if st is None
                else "restart maskwatch to use the file now at that path")
        raise GalleryUnavailable(f"the gallery file {self.path} was deleted or replaced while "
                                 f"maskwatch was running; nothing more is written to it: {what}")

    def _con(self) -> sqlite3.Connection:
        if self._closed:
            raise GalleryError(f"the gallery {self.path} was closed")
        self._check_file()
        con = getattr(self._local, "con", None)
        if con is not None:
            return con
        try:
            con = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                                  check_same_thread=False)
            con.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            con.execute("PRAGMA foreign_keys = ON")
            con.execute("PRAGMA secure_delete = ON")
            con.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL mode, much faster
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc, "open") from exc
        with self._cons_lock:
            # close the connections of threads that have ended (web server pools churn)
            for ident, (thread, old) in list(self._cons.items()):
                if not thread.is_alive():
                    old.close()
                    del self._cons[ident]
            self._cons[threading.get_ident()] = (threading.current_thread(), con)
        self._local.con = con
        return con

    def _translate(self, exc: sqlite3.Error, what: str) -> GalleryError:
        msg = str(exc)
        low = msg.lower()
        if "locked" in low or "busy" in low:
            return GalleryUnavailable(
                f"the gallery {self.path} is locked by another writer for more than "
                f"{self.busy_timeout_s:g} s; could not {what}")
        if "not a database" in low or "malformed" in low:
            return GalleryError(f"{self.path} is not a maskwatch gallery "
                                "(not a readable SQLite database)")
        # the server's condition, not the request's: 503
        if "readonly" in low or "read-only" in low:
            return GalleryUnavailable(f"the gallery {self.path} is read-only; could not {what}")
        if "unable to open" in low:
            return GalleryUnavailable(f"cannot open the gallery file {self.path}")
        return GalleryError(f"gallery {self.path}: could not {what} ({msg})")

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._translate(exc, what) from exc

    @contextmanager
    def _write(self, what: str, bump: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction that also bumps the change stamp (unless ``bump`` is
        False: events do not change what a matcher sees); rolled back on any error."""
        con = self._con()
        with self._errors(what):
            con.execute("BEGIN IMMEDIATE")
        try:
            with self._errors(what):  # e.g. a file that became read-only: one clear sentence
                yield con
                if bump:
                    con.execute("UPDATE meta SET value = value + 1 WHERE key = 'stamp'")
                self._check_file()  # deleted while this transaction ran: roll it back
                con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    def _read(self, sql: str, args: Sequence[object] = (), what: str = "read") -> list[tuple]:
        with self._errors(what):
            return self._con().execute(sql, args).fetchall()

    @contextmanager
    def _snapshot(self, what: str) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query in it sees the same state of the file."""
        con = self._con()
        with self._errors(what):
            con.execute("BEGIN")
            try:
                yield con
            finally:
                if con.in_transaction:
                    con.execute("COMMIT")

    def close(self) -> None:
        """Close every thread's connection."""
        with self._cons_lock:
            for _, con in self._cons.values():
                try:
                    con.close()
                except sqlite3.Error:  # pragma: no cover - closing is best effort
                    pass
            self._cons.clear()
        self._closed = True
        self._local = threading.local()

    # ------------------------------------------------------------------ primitives

    def change_stamp(self) -> int:
        rows = self._read("SELECT value FROM meta WHERE key = 'stamp'",
                          what="read the change stamp")
        return int(rows[0][0])

    @staticmethod
    def _template_rows(person_id: str, templates: Sequence[Template]) -> list[tuple]:
        return [(person_id, t.embedder, t.embedder_version, int(t.embedding.size),
                 np.asarray(t.embedding, "<f4").tobytes(), int(t.masked), int(t.synthetic),
                 t.source)
                for t in templates]

    _INSERT_TEMPLATE = ("INSERT INTO templates (person_id, embedder, embedder_version, dim, "
                        "embedding, masked, synthetic, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")

    def _write_people(self, records: Sequence[PersonRecord], replace: bool) -> None:
        with self._write("add people") as con:
            for rec in records:
                p = rec.person
                old = None
                if replace:
                    old = con.execute("SELECT id FROM people WHERE name = ?", (p.name,)).fetchone()
                    con.execute("DELETE FROM people WHERE name = ?", (p.name,))
                try:
                    con.execute("INSERT INTO people (id, name, created, thumbnail) "
                                "VALUES (?, ?, ?, ?)",
                                (p.person_id, p.name, p.created, p.thumbnail))
                except sqlite3.IntegrityError as exc:
                    raise PersonExists(f"a person named {p.name!r} is already enrolled") from exc
                con.executemany(self._INSERT_TEMPLATE,
                                self._template_rows(p.person_id, rec.templates))
                if old is not None:  # a replaced person keeps their events
                    con.execute("UPDATE events SET person_id = ? WHERE person_id = ?",
                                (p.person_id, old[0]))

    def _person_id(self, con: sqlite3.Connection, name: str) -> str:
        row = con.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise PersonNotFound(f"no person named {name!r} is enrolled")
        return row[0]

    def _add_templates(self, name: str, templates: Sequence[Template]) -> None:
        with self._write(f"add templates to {name!r}") as con:
            pid = self._person_id(con, name)
            con.executemany(self._INSERT_TEMPLATE, self._template_rows(pid, templates))

    def _people(self, name: str | None, thumbnails: bool) -> list[Person]:
        sql = (f"SELECT p.id, p.name, p.created, COUNT(t.id), COALESCE(SUM(t.synthetic), 0), "
               f"{'p.thumbnail' if thumbnails else 'NULL'} "
               "FROM people p LEFT JOIN templates t ON t.person_id = p.id "
               f"{'WHERE p.name = ?' if name is not None else ''} GROUP BY p.id ORDER BY p.name")
        rows = self._read(sql, (name,) if name is not None else (), "list people")
        return [Person(r[0], r[1], float(r[2]), int(r[3]), int(r[4]),
                       bytes(r[5]) if r[5] is not None else None)
                for r in rows]

    def _rename(self, old: str, new: str) -> None:
        with self._write(f"rename {old!r}") as con:
            self._person_id(con, old)
            try:
                con.execute("UPDATE people SET name = ? WHERE name = ?", (new, old))
            except sqlite3.IntegrityError as exc:
                raise PersonExists(f"a person named {new!r} is already enrolled") from exc

    def _remove(self, name: str) -> int:
        with self._write(f"remove {name!r}") as con:
            pid = self._person_id(con, name)
            n = con.execute("SELECT COUNT(*) FROM templates WHERE person_id = ?",
                            (pid,)).fetchone()[0]
            con.execute("DELETE FROM templates WHERE person_id = ?", (pid,))
            con.execute("DELETE FROM events WHERE person_id = ?", (pid,))
            con.execute("DELETE FROM people WHERE id = ?", (pid,))
        self.checkpoint()
        return int(n)

    def _templates_of(self, name: str) -> list[Template]:
        rows = self._read(
            "SELECT t.person_id, t.embedding, t.embedder, t.embedder_version, t.masked, "
            "t.synthetic, t.source "
            "FROM templates t JOIN people p ON p.id = t.person_id WHERE p.name = ? ORDER BY t.id",
            (name,), f"read the templates of {name!r}")
        return [Template(r[0], np.frombuffer(r[1], "<f4").astype(np.float32), r[2], r[3],
                         bool(r[4]), bool(r[5]), r[6]) for r in rows]

    def _templates(self, embedder: str,
                   embedder_version: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = self._read(
            "SELECT p.name, t.embedding, t.masked, t.dim FROM templates t "
            "JOIN people p ON p.id = t.person_id "
            "WHERE t.embedder = ? AND t.embedder_version = ? ORDER BY t.id",
            (embedder, embedder_version), "read templates")
        if not rows:
            return np.zeros(0, object), np.zeros((0, 0), np.float32), np.zeros(0, bool)
        names = np.array([r[0] for r in rows], dtype=object)
        emb = np.frombuffer(b"".join(r[1] for r in rows), "<f4").astype(np.float32)
        emb = emb.reshape(len(rows), rows[0][3])
        masked = np.fromiter((r[2] for r in rows), bool, len(rows))
        return names, emb, masked

    def _dim(self, embedder: str, embedder_version: str) -> int | None:
        rows = self._read("SELECT dim FROM templates WHERE embedder = ? AND embedder_version = ? "
                          "LIMIT 1", (embedder, embedder_version), "read templates")
        return int(rows[0][0]) if rows else None

    def _embedder_counts(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        rows = self._read("SELECT embedder, embedder_version, COUNT(DISTINCT person_id), "
                          "COUNT(*), MAX(dim) FROM templates GROUP BY embedder, embedder_version",
                          what="count templates")
        return {(r[0], r[1]): (int(r[2]), int(r[3]), int(r[4])) for r in rows}

    # ------------------------------------------------------------------ events

    def _add_events(self, events: Sequence[Event]) -> int:
        with self._write(f"record {len(events)} events", bump=False) as con:
            names = sorted({e.identity for e in events if e.identity})
            ids: dict[str, str] = {}
            for i in range(0, len(names), 500):  # SQLite's limit on parameters
                chunk = names[i:i + 500]
                marks = ",".join("?" * len(chunk))
                ids.update(con.execute(f"SELECT name, id FROM people WHERE name IN ({marks})",
                                       chunk).fetchall())
            before = con.total_changes
            con.executemany(
                "INSERT OR IGNORE INTO events (id, source, track_id, started, ended, frames, "
                "mask_state, with_mask_frames, without_mask_frames, mask_incorrect_frames, "
                "unknown_frames, person_id, best_similarity) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(e.id, e.source, e.track_id, e.started, e.ended, e.frames, e.mask_state,
                  *(int(e.mask_frames.get(k, 0)) for k in SHOWN_MASK_STATES),
                  ids.get(e.identity) if e.identity else None, e.best_similarity)
                 for e in events])
            return con.total_changes - before

    @staticmethod
    def _event_where(f: EventFilter) -> tuple[str, list[object]]:
        sql, args = [], []
        if f.since is not None:
            sql.append("e.ended >= ?")
            args.append(f.since)
        if f.until is not None:
            sql.append("e.ended < ?")
            args.append(f.until)
        if f.source is not None:
            sql.append("e.source = ?")
            args.append(f.source)
        if f.unknown:
            sql.append("e.person_id IS NULL")
        elif f.identity is not None:
            sql.append("e.person_id = (SELECT id FROM people WHERE name = ?)")
            args.append(f.identity)
        if f.unclassified:
            sql.append("e.mask_state IS NULL")
        elif f.mask_state is not None:
            sql.append("e.mask_state = ?")
            args.append(f.mask_state)
        return ("WHERE " + " AND ".join(sql)) if sql else "", args

    def _query_events(self, f: EventFilter, limit: int, offset: int,
                      newest_first: bool) -> tuple[list[Event], int]:
        where, args = self._event_where(f)
        order = "DESC" if newest_first else "ASC"
        with self._snapshot("read events") as con:
            total = con.execute(f"SELECT COUNT(*) FROM events e {where}", args).fetchone()[0]
            rows = con.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events e LEFT JOIN people p ON p.id = e.person_id "
                f"{where} ORDER BY e.ended {order}, e.id {order} LIMIT ? OFFSET ?",
                [*args, limit, offset]).fetchall()
        return [Event(r[0], r[1], int(r[2]), float(r[3]), float(r[4]), int(r[5]), r[6],
                      dict(zip(SHOWN_MASK_STATES, map(int, r[7:11]), strict=True)),
                      r[11], None if r[12] is None else float(r[12])) for r in rows], int(total)

    def _event_counts(self, f: EventFilter, bucket_s: float, origin: float) -> dict[str, object]:
        where, args = self._event_where(f)
        # fixed names, not input
        states = ", ".join(f"SUM(e.mask_state = '{k}')" for k in SHOWN_MASK_STATES)
        # floor() without SQLite's optional math functions: CAST truncates towards zero
        x = "((e.ended - ?) / ?)"
        with self._snapshot("count events") as con:
            total, unknown, unclassified, *by_state = con.execute(
                f"SELECT COUNT(*), SUM(e.person_id IS NULL), SUM(e.mask_state IS NULL), {states} "
                f"FROM events e {where}", args).fetchone()
            people = con.execute(
                f"SELECT p.name, COUNT(*) FROM events e JOIN people p ON p.id = e.person_id "
                f"{where} GROUP BY e.person_id", args).fetchall()
            buckets = con.execute(
                f"SELECT k, COUNT(*), {states} FROM "
                f"(SELECT CAST({x} AS INTEGER) - ({x} < CAST({x} AS INTEGER)) "
                f"AS k, e.mask_state FROM events e {where}) e GROUP BY k ORDER BY k LIMIT ?",
                [origin, bucket_s] * 3 + args + [MAX_BUCKETS + 1]).fetchall()
        by_mask: dict[str | None, int] = {
            k: int(v or 0) for k, v in zip(SHOWN_MASK_STATES, by_state, strict=True)}
        by_mask[None] = int(unclassified or 0)
        return {"total": int(total), "unknown": int(unknown or 0),
                "people": {n: int(c) for n, c in people},
                "by_mask": by_mask, "buckets": [tuple(int(v or 0) for v in r) for r in buckets]}

    def _purge_events(self, older_than: float) -> int:
        with self._write("delete old events", bump=False) as con:
            n = con.execute("DELETE FROM events WHERE ended < ?", (older_than,)).rowcount
        if n:
            self.checkpoint()
        return int(n)

    def _event_sources(self) -> list[str]:
        return [r[0] for r in self._read("SELECT DISTINCT source FROM events ORDER BY source",
                                         what="list event sources")]

    # ------------------------------------------------------------------ maintenance

    def checkpoint(self) -> bool:
        """Copy the WAL into the main file and empty it (best effort).

        Returns:
            True when the WAL was emptied; False when readers kept part of it (it is
            emptied by a later checkpoint).
        """
        try:
            busy, _, _ = self._con().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except (sqlite3.Error, GalleryError) as exc:
            log.debug("checkpoint of %s failed: %s", self.path, exc)
            return False
        return not busy

    def vacuum(self) -> None:
        """Rebuild the file to its smallest size (takes the write lock for a while)."""
        with self._errors("vacuum"):
            self._con().execute("VACUUM")
        self.checkpoint()
