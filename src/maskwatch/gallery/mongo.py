"""The MongoDB gallery store: ``--db mongodb://host:port/db``.

Collections: ``people`` (``_id`` = person id, unique ``name``, ``created``,
``thumbnail``), ``templates`` (``person_id``, ``embedder``, ``embedder_version``,
``dim``, ``embedding`` as little-endian float32 bytes, ``masked``, ``synthetic``,
``source``), ``events`` (``_id`` = event id, ``source``, ``track_id``, ``started``,
``ended``, ``frames``, ``mask_state``, ``mask_frames``, ``person_id`` or null,
``best_similarity``; indexed by ``ended`` and by source, person and mask state with
``ended``) and ``meta`` (the change stamp document ``{_id: "stamp", value, epoch}``:
``value`` counts writes, ``epoch`` is drawn at random when the document is created, so a
database that lost its last writes (a server killed before it saved them, a restored
backup) and counts from an older value again still gives stamps never seen before).

Writes run in a multi-document transaction when the server supports them (replica
sets, sharded clusters, SecantusDB). On a standalone server they are ordered so that
a half-done write is never visible: templates are written before their person and
deleted after them, and readers ignore templates whose person does not exist.

A server that is down or a wrong host is reported as :class:`GalleryUnavailable`
within ``timeout_s`` (default 2.5 s), never a hang.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from maskwatch.errors import GalleryError, GalleryUnavailable, PersonExists, PersonNotFound
from maskwatch.gallery.base import Gallery, mask_url_password
from maskwatch.gallery.events import MAX_BUCKETS, EventFilter
from maskwatch.gallery.records import Person, PersonRecord, Template
from maskwatch.records import Event
from maskwatch.types import SHOWN_MASK_STATES

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_DATABASE = "maskwatch"


class MongoGallery(Gallery):
    """Gallery in a MongoDB database.

    Nothing is sent to the server until the first operation, so opening never
    blocks; an engine can start while the server is down and recognise nobody.

    Args:
        url: ``mongodb://[user:password@]host[:port][/database][?options]`` (or
            ``mongodb+srv://``); the database defaults to ``maskwatch``.
        timeout_s: seconds to wait for a server (selection and connection) before
            :class:`GalleryUnavailable`.
        socket_timeout_s: seconds one operation may wait for the server's answer.
    """

    def __init__(self, url: str, *, timeout_s: float = 2.5, socket_timeout_s: float = 30.0) -> None:
        super().__init__()
        self.location = mask_url_password(url)
        try:
            import pymongo
            from pymongo import errors
        except ImportError as exc:
            raise GalleryError("a MongoDB gallery needs pymongo: pip install pymongo") from exc
        self._errors_mod = errors
        self.timeout_s = float(timeout_s)
        ms = int(self.timeout_s * 1000)
        try:
            self._client: Any = pymongo.MongoClient(
                url, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms,
                socketTimeoutMS=int(socket_timeout_s * 1000), appname="maskwatch",
            )
            # Every write waits for the server's journal (j: true): a write the server
            # acknowledged then survives the server being killed (without it MongoDB, and
            # SecantusDB, acknowledge before the journal is on disk, so events handed over
            # just before a crash could be lost). Writes are few (enrolments, an event batch
            # every 2 s); the URL's other settings (w=...) are kept.
            self._durable = pymongo.WriteConcern(**{**self._client.write_concern.document,
                                                    "j": True})
            self._db = self._client.get_default_database(default=DEFAULT_DATABASE,
                                                         write_concern=self._durable)
        except (errors.ConfigurationError, errors.InvalidName, ValueError, TypeError) as exc:
            raise GalleryError(f"invalid MongoDB URL {self.location}: {exc}") from exc
        except errors.PyMongoError as exc:  # e.g. SRV records that do not resolve
            raise GalleryUnavailable(f"the MongoDB gallery at {self.location} cannot be reached: "
                                     f"{exc}") from exc
        self._people_c = self._db["people"]
        self._templates_c = self._db["templates"]
        self._meta_c = self._db["meta"]
        self._events_c = self._db["events"]
        self._ready = False
        self._transactions = False
        self._ready_lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        e = self._errors_mod
        try:
            yield
        except (e.ServerSelectionTimeoutError, e.ConnectionFailure, e.NetworkTimeout) as exc:
            raise GalleryUnavailable(
                f"the MongoDB gallery at {self.location} cannot be reached (no answer within "
                f"{self.timeout_s:g} s); could not {what}") from exc
        except e.OperationFailure as exc:
            if exc.code in (13, 18):
                raise GalleryError(f"MongoDB at {self.location} refused access (check the user "
                                   f"name and password in the URL); could not {what}") from exc
            detail = ((exc.details or {}).get("errmsg", str(exc)) if isinstance(exc.details, dict)
                      else str(exc))
            raise GalleryError(f"MongoDB at {self.location} could not {what}: {detail}") from exc
        except e.PyMongoError as exc:
            raise GalleryError(f"MongoDB at {self.location} could not {what}: {exc}") from exc

    def _ensure(self) -> None:
        """Create the indexes and learn whether transactions work (once, lazily)."""
        if self._ready:
            return
        with self._ready_lock, self._errors("prepare the gallery"):
            if self._ready:
                return
            hello = self._client.admin.command("hello")
            self._transactions = bool(hello.get("setName") or hello.get("msg") == "isdbgrid") and \
                hello.get("logicalSessionTimeoutMinutes") is not None
            self._people_c.create_index("name", unique=True, name="unique_name")
            self._templates_c.create_index([("embedder", 1), ("embedder_version", 1)],
                                           name="by_embedder")
            self._templates_c.create_index("person_id", name="by_person")
            self._events_c.create_index([("ended", 1), ("_id", 1)], name="by_ended")
            self._events_c.create_index([("source", 1), ("ended", 1)], name="by_source")
            self._events_c.create_index([("person_id", 1), ("ended", 1)], name="by_person")
            self._events_c.create_index([("mask_state", 1), ("ended", 1)], name="by_mask_state")
            self._ready = True
            if not self._transactions:
                log.info("%s has no transactions (standalone server): writes are ordered instead",
                         self.location)

    def _atomic(self, what: str, fn: Callable[[Any], T], bump: bool = True) -> T:
        """Run ``fn(session)`` in a transaction (retried on write conflicts), or
        ``fn(None)`` where the server has none; then bump the change stamp (unless
        ``bump`` is False: events do not change what a matcher sees).

        The stamp is bumped after the commit, never before: a reader that sees the
        new stamp then also sees the new data.
        """
        self._ensure()
        e = self._errors_mod
        with self._errors(what):
            if not self._transactions:
                result = fn(None)
            else:
                for attempt in range(12):
                    try:
                        with self._client.start_session() as s, \
                                s.start_transaction(write_concern=self._durable):
                            result = fn(s)
                        break
                    except (e.ConnectionFailure, e.ServerSelectionTimeoutError):
                        raise
                    except e.PyMongoError as exc:
                        if not exc.has_error_label("TransientTransactionError") or attempt == 11:
                            raise
                        time.sleep(random.uniform(0.005, 0.02) * 2 ** min(attempt, 5))
            if bump:
                self._meta_c.update_one({"_id": "stamp"},
                                        {"$inc": {"value": 1},
                                         "$setOnInsert": {"epoch": random.getrandbits(31)}},
                                        upsert=True)
        return result

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ primitives

    def change_stamp(self) -> int:
        """The write count, with the stamp document's epoch in the bits above 32 (see the
        module docstring); 0 while nothing was written."""
        with self._errors("read the change stamp"):
            doc = self._meta_c.find_one({"_id": "stamp"})
        return int(doc["value"]) + (int(doc.get("epoch", 0)) << 32) if doc else 0

    @staticmethod
    def _template_docs(person_id: str, templates: Sequence[Template]) -> list[dict[str, Any]]:
        return [{"person_id": person_id, "embedder": t.embedder,
                 "embedder_version": t.embedder_version, "dim": int(t.embedding.size),
                 "embedding": np.asarray(t.embedding, "<f4").tobytes(),
                 "masked": bool(t.masked), "synthetic": bool(t.synthetic), "source": t.source}
                for t in templates]

    def _write_people(self, records: Sequence[PersonRecord], replace: bool) -> None:
        dup = self._errors_mod.DuplicateKeyError
        names = [r.person.name for r in records]

        def write(s: Any) -> None:
            old = list(self._people_c.find({"name": {"$in": names}}, {"name": 1}, session=s))
            if old and not replace:
                raise PersonExists(f"a person named {old[0]['name']!r} is already enrolled")
            for doc in old:  # replace: the person first (hides them), then their templates
                self._people_c.delete_one({"_id": doc["_id"]}, session=s)
                self._templates_c.delete_many({"person_id": doc["_id"]}, session=s)
            docs = [d for r in records
                    for d in self._template_docs(r.person.person_id, r.templates)]
            if docs:  # templates before people: until their person exists they are ignored
                self._templates_c.insert_many(docs, ordered=False, session=s)
            try:
                self._people_c.insert_many(
                    [{"_id": r.person.person_id, "name": r.person.name, "created": r.person.created,
                      "thumbnail": r.person.thumbnail} for r in records], ordered=True, session=s)
            except (dup, self._errors_mod.BulkWriteError) as exc:
                if s is None:  # no transaction to roll back: undo by hand
                    ids = [r.person.person_id for r in records]
                    self._people_c.delete_many({"_id": {"$in": ids}})
                    self._templates_c.delete_many({"person_id": {"$in": ids}})
                raise PersonExists("one of these names was enrolled meanwhile: "
                                   f"{', '.join(repr(n) for n in names[:3])}") from exc
            new_ids = {r.person.name: r.person.person_id for r in records}
            for doc in old:  # a replaced person keeps their events
                self._events_c.update_many({"person_id": doc["_id"]},
                                           {"$set": {"person_id": new_ids[doc["name"]]}}, session=s)

        self._atomic("add people", write)

    def _find_person(self, name: str, s: Any = None) -> dict[str, Any]:
        doc = self._people_c.find_one({"name": name}, {"_id": 1}, session=s)
        if doc is None:
            raise PersonNotFound(f"no person named {name!r} is enrolled")
        return doc

    def _add_templates(self, name: str, templates: Sequence[Template]) -> None:
        def write(s: Any) -> None:
            pid = self._find_person(name, s)["_id"]
            self._templates_c.insert_many(self._template_docs(pid, templates), ordered=False,
                                          session=s)
            if s is None and self._people_c.count_documents({"_id": pid}) == 0:
                self._templates_c.delete_many({"person_id": pid})  # removed meanwhile
                raise PersonNotFound(f"{name!r} was removed while templates were added")

        self._atomic(f"add templates to {name!r}", write)

    def _people(self, name: str | None, thumbnails: bool) -> list[Person]:
        self._ensure()
        with self._errors("list people"):
            proj = ({"name": 1, "created": 1, "thumbnail": 1} if thumbnails
                    else {"name": 1, "created": 1})
            query = {} if name is None else {"name": name}
            docs = list(self._people_c.find(query, proj).sort("name", 1))
            if not docs:
                return []
            match = {} if name is None else {"person_id": docs[0]["_id"]}
            counts = {c["_id"]: (c["n"], c["s"]) for c in self._templates_c.aggregate([
                {"$match": match},
                {"$group": {"_id": "$person_id", "n": {"$sum": 1},
                            "s": {"$sum": {"$cond": ["$synthetic", 1, 0]}}}},
            ])}
        out = []
        for d in docs:
            n, s = counts.get(d["_id"], (0, 0))
            thumb = d.get("thumbnail")
            out.append(Person(d["_id"], d["name"], float(d["created"]), int(n), int(s),
                              bytes(thumb) if thumb else None))
        return out

    def _rename(self, old: str, new: str) -> None:
        dup = self._errors_mod.DuplicateKeyError

        def write(s: Any) -> None:
            try:
                res = self._people_c.update_one({"name": old}, {"$set": {"name": new}}, session=s)
            except dup as exc:
                raise PersonExists(f"a person named {new!r} is already enrolled") from exc
            if res.matched_count == 0:
                raise PersonNotFound(f"no person named {old!r} is enrolled")

        self._atomic(f"rename {old!r}", write)

    def _remove(self, name: str) -> int:
        def write(s: Any) -> int:
            pid = self._find_person(name, s)["_id"]
            # the person first: from then on their templates are invisible to readers
            self._people_c.delete_one({"_id": pid}, session=s)
            n = self._templates_c.delete_many({"person_id": pid}, session=s).deleted_count
            self._events_c.delete_many({"person_id": pid}, session=s)
            # also sweep templates and events orphaned by an interrupted earlier write
            if s is None:
                live = [d["_id"] for d in self._people_c.find({}, {"_id": 1})]
                self._templates_c.delete_many({"person_id": {"$nin": live}})
                self._events_c.delete_many({"person_id": {"$nin": [*live, None]}})
            return int(n)

        return self._atomic(f"remove {name!r}", write)

    def _templates_of(self, name: str) -> list[Template]:
        self._ensure()
        with self._errors(f"read the templates of {name!r}"):
            doc = self._people_c.find_one({"name": name}, {"_id": 1})
            if doc is None:
                return []
            docs = list(self._templates_c.find({"person_id": doc["_id"]}).sort("_id", 1))
        return [Template(d["person_id"], np.frombuffer(d["embedding"], "<f4").astype(np.float32),
                         d["embedder"], d["embedder_version"], bool(d["masked"]),
                         bool(d["synthetic"]), d.get("source", ""))
                for d in docs]

    def _templates(self, embedder: str,
                   embedder_version: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._ensure()
        with self._errors("read templates"):
            names_by_id = {d["_id"]: d["name"] for d in self._people_c.find({}, {"name": 1})}
            cursor = self._templates_c.find(
                {"embedder": embedder, "embedder_version": embedder_version},
                {"_id": 0, "person_id": 1, "embedding": 1, "masked": 1, "dim": 1},
            ).sort("_id", 1).batch_size(10_000)
            docs = [d for d in cursor if d["person_id"] in names_by_id]
        if not docs:
            return np.zeros(0, object), np.zeros((0, 0), np.float32), np.zeros(0, bool)
        names = np.array([names_by_id[d["person_id"]] for d in docs], dtype=object)
        emb = np.frombuffer(b"".join(d["embedding"] for d in docs), "<f4").astype(np.float32)
        masked = np.fromiter((bool(d["masked"]) for d in docs), bool, len(docs))
        return names, emb.reshape(len(docs), int(docs[0]["dim"])), masked

    def _dim(self, embedder: str, embedder_version: str) -> int | None:
        self._ensure()
        with self._errors("read templates"):
            doc = self._templates_c.find_one(
                {"embedder": embedder, "embedder_version": embedder_version}, {"_id": 0, "dim": 1})
        return int(doc["dim"]) if doc else None

    def _embedder_counts(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        self._ensure()
        with self._errors("count templates"):
            rows = list(self._templates_c.aggregate([
                {"$group": {"_id": {"e": "$embedder", "v": "$embedder_version", "p": "$person_id"},
                            "n": {"$sum": 1}, "dim": {"$max": "$dim"}}},
            ]))
            live = {d["_id"] for d in self._people_c.find({}, {"_id": 1})}
        out: dict[tuple[str, str], tuple[int, int, int]] = {}
        for r in rows:
            if r["_id"]["p"] not in live:
                continue
            key = (r["_id"]["e"], r["_id"]["v"])
            people, n, dim = out.get(key, (0, 0, 0))
            out[key] = (people + 1, n + int(r["n"]), max(dim, int(r["dim"])))
        return out

    # ------------------------------------------------------------------ events

    def _add_events(self, events: Sequence[Event]) -> int:
        e = self._errors_mod

        def write(s: Any) -> int:
            names = sorted({ev.identity for ev in events if ev.identity})
            pids = ({d["name"]: d["_id"]
                     for d in self._people_c.find({"name": {"$in": names}}, {"name": 1}, session=s)}
                    if names else {})
            ids = list(dict.fromkeys(ev.id for ev in events))
            stored = {d["_id"]
                      for d in self._events_c.find({"_id": {"$in": ids}}, {"_id": 1}, session=s)}
            docs, seen = [], set(stored)
            for ev in events:
                if ev.id in seen:
                    continue
                seen.add(ev.id)
                docs.append({"_id": ev.id, "source": ev.source, "track_id": ev.track_id,
                             "started": ev.started, "ended": ev.ended, "frames": ev.frames,
                             "mask_state": ev.mask_state,
                             "mask_frames": {k: int(ev.mask_frames.get(k, 0))
                                             for k in SHOWN_MASK_STATES},
                             "person_id": pids.get(ev.identity) if ev.identity else None,
                             "best_similarity": ev.best_similarity})
            if not docs:
                return 0
            try:
                return len(self._events_c.insert_many(docs, ordered=False, session=s).inserted_ids)
            except e.BulkWriteError as exc:  # written meanwhile by a retry elsewhere: not an error
                if s is None and all(w.get("code") == 11000
                                     for w in exc.details.get("writeErrors", [])):
                    return int(exc.details.get("nInserted", 0))
                raise

        return self._atomic(f"record {len(events)} events", write, bump=False)

    def _event_match(self, f: EventFilter) -> dict[str, Any] | None:
        """The query document, or None when it can match nothing (a name not enrolled)."""
        q: dict[str, Any] = {}
        if f.since is not None or f.until is not None:
            q["ended"] = {**({"$gte": f.since} if f.since is not None else {}),
                          **({"$lt": f.until} if f.until is not None else {})}
        if f.source is not None:
            q["source"] = f.source
        if f.unknown:
            q["person_id"] = None
        elif f.identity is not None:
            doc = self._people_c.find_one({"name": f.identity}, {"_id": 1})
            if doc is None:
                return None
            q["person_id"] = doc["_id"]
        if f.unclassified:
            q["mask_state"] = None
        elif f.mask_state is not None:
            q["mask_state"] = f.mask_state
        return q

    def _names_of(self, pids: set[Any]) -> dict[Any, str]:
        pids.discard(None)
        if not pids:
            return {}
        return {d["_id"]: d["name"]
                for d in self._people_c.find({"_id": {"$in": list(pids)}}, {"name": 1})}

    def _query_events(self, f: EventFilter, limit: int, offset: int,
                      newest_first: bool) -> tuple[list[Event], int]:
        self._ensure()
        with self._errors("read events"):
            q = self._event_match(f)
            if q is None:
                return [], 0
            total = self._events_c.count_documents(q)
            d = -1 if newest_first else 1
            docs = list(self._events_c.find(q).sort([("ended", d), ("_id", d)])
                        .skip(offset).limit(limit))
            names = self._names_of({doc.get("person_id") for doc in docs})
        out = []
        for doc in docs:
            mf = doc.get("mask_frames") or {}
            sim = doc.get("best_similarity")
            out.append(Event(doc["_id"], doc["source"], int(doc["track_id"]), float(doc["started"]),
                             float(doc["ended"]), int(doc["frames"]), doc.get("mask_state"),
                             {k: int(mf.get(k, 0)) for k in SHOWN_MASK_STATES},
                             names.get(doc.get("person_id")), None if sim is None else float(sim)))
        return out, int(total)

    def _event_counts(self, f: EventFilter, bucket_s: float, origin: float) -> dict[str, Any]:
        self._ensure()
        is_state = {k: {"$sum": {"$cond": [{"$eq": ["$mask_state", k]}, 1, 0]}}
                    for k in SHOWN_MASK_STATES}
        with self._errors("count events"):
            q = self._event_match(f)
            if q is None:  # pragma: no cover - stats take no identity filter
                q = {"_id": None}
            by_person = list(self._events_c.aggregate([
                {"$match": q}, {"$group": {"_id": "$person_id", "n": {"$sum": 1}}}]))
            by_mask = list(self._events_c.aggregate([
                {"$match": q}, {"$group": {"_id": "$mask_state", "n": {"$sum": 1}}}]))
            buckets = list(self._events_c.aggregate([
                {"$match": q},
                {"$group": {"_id": {"$floor": {"$divide": [{"$subtract": ["$ended", origin]},
                                                           bucket_s]}},
                            "n": {"$sum": 1}, **is_state}},
                {"$sort": {"_id": 1}},
                {"$limit": MAX_BUCKETS + 1},
            ]))
            names = self._names_of({r["_id"] for r in by_person})
        people: dict[str, int] = {}
        unknown = 0
        for r in by_person:  # events of a person removed meanwhile count as unknown
            name = names.get(r["_id"])
            if name is None:
                unknown += int(r["n"])
            else:
                people[name] = people.get(name, 0) + int(r["n"])
        return {"total": sum(int(r["n"]) for r in by_person), "unknown": unknown, "people": people,
                "by_mask": {r["_id"]: int(r["n"]) for r in by_mask},
                "buckets": [(int(r["_id"]), int(r["n"]),
                             *(int(r[k]) for k in SHOWN_MASK_STATES)) for r in buckets]}

    def _purge_events(self, older_than: float) -> int:
        self._ensure()
        with self._errors("delete old events"):
            return int(self._events_c.delete_many({"ended": {"$lt": older_than}}).deleted_count)

    def _event_sources(self) -> list[str]:
        self._ensure()
        with self._errors("list event sources"):
            return sorted(str(x) for x in self._events_c.distinct("source"))
