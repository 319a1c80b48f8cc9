"""The same behaviour from every gallery store (SQLite file, MongoDB server)."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from maskwatch.gallery import (
    GalleryError,
    GalleryUnavailable,
    InvalidName,
    PersonExists,
    PersonNotFound,
    Template,
    open_gallery,
    validate_name,
)
from maskwatch.gallery.sqlite import SQLiteGallery

EMB, VER = "test-embedder", "1"


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def make_templates(n: int, *, seed: int = 0, dim: int = 16, embedder: str = EMB, version: str = VER,
                   masked_every: int = 2) -> list[Template]:
    """``n`` unit templates; every ``masked_every``-th one (from the second) masked, 0: none."""
    emb = unit(np.random.default_rng(seed).normal(size=(n, dim)))
    flags = [masked_every > 0 and i % masked_every == 1 for i in range(n)]
    return [Template("", emb[i], embedder, version, masked=flags[i], synthetic=flags[i],
                     source=f"photo{i}.jpg") for i in range(n)]


def counts(g) -> tuple[int, int]:
    people = g.list_people()
    return len(people), sum(p.templates for p in people)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Ann", "Ann"),
        ("  Ann Lee \t", "Ann Lee"),
        ("Zoë O'Brien-Łukasz", "Zoë O'Brien-Łukasz"),
        ("x" * 100, "x" * 100),
        ("...a", "...a"),
    ],
)
def test_valid_names(name, expected):
    assert validate_name(name) == expected


@pytest.mark.parametrize(
    "name",
    ["", "   ", "a/b", "a\\b", "a:b", "a*b", "a?b", 'a"b', "a<b", "a>b", "a|b", "a\nb", "a\x00b",
     "a\x7fb", ".", "..", "x" * 101, None, 42],
)
def test_invalid_names_rejected_and_nothing_written(gallery, name):
    stamp = gallery.change_stamp()
    with pytest.raises(InvalidName) as info:
        gallery.add_person(name, templates=make_templates(2))
    assert str(info.value) and "\n" not in str(info.value)
    assert gallery.list_people() == []
    assert gallery.change_stamp() == stamp
    assert len(gallery.templates(EMB, VER)[0]) == 0


# --------------------------------------------------------------------------- people


def test_add_list_rename_remove(gallery):
    ann = gallery.add_person("Ann", templates=make_templates(4, seed=1), thumbnail=b"\xff\xd8jpeg")
    gallery.add_person("Bob")
    assert gallery.add_templates("Bob", make_templates(3, seed=2, masked_every=0)) == 3
    people = gallery.list_people()
    assert [p.name for p in people] == ["Ann", "Bob"]
    assert [(p.templates, p.synthetic_templates) for p in people] == [(4, 2), (3, 0)]
    assert people[0].thumbnail is None  # not loaded unless asked
    assert gallery.get_person("Ann").thumbnail == b"\xff\xd8jpeg"
    assert gallery.get_person("Ann").person_id == ann.person_id

    renamed = gallery.rename("Ann", "Ann Lee")
    assert renamed.person_id == ann.person_id and renamed.templates == 4
    names, emb, masked = gallery.templates(EMB, VER)
    assert sorted(set(names)) == ["Ann Lee", "Bob"] and emb.shape == (7, 16) and masked.sum() == 2
    with pytest.raises(PersonNotFound):
        gallery.get_person("Ann")

    assert gallery.remove_person("Ann Lee") == 4
    assert [p.name for p in gallery.list_people()] == ["Bob"]
    names, emb, _ = gallery.templates(EMB, VER)
    assert list(names) == ["Bob"] * 3 and emb.shape == (3, 16)
    with pytest.raises(PersonNotFound):
        gallery.remove_person("Ann Lee")
    with pytest.raises(PersonNotFound):
        gallery.templates_of("Ann Lee")
    assert gallery.remove_person("Bob") == 3
    assert counts(gallery) == (0, 0)
    assert gallery.embedders_in_use() == {}


def test_removal_leaves_nothing_behind(gallery, store):
    secret = "Zebulon Quixotic-Marchbanks"
    gallery.add_person("Keep Me", templates=make_templates(3, seed=5))
    gallery.add_person(secret, templates=[
        Template("", t.embedding, t.embedder, t.embedder_version, t.masked, t.synthetic, f"{secret}.jpg")
        for t in make_templates(20, seed=6)], thumbnail=f"THUMB-{secret}".encode())
    gallery.rename(secret, secret + " Jr")
    assert gallery.remove_person(secret + " Jr") == 20
    assert [p.name for p in gallery.list_people()] == ["Keep Me"]
    assert gallery.templates_of("Keep Me") and len(gallery.templates(EMB, VER)[0]) == 3
    if store == "mongo":
        db = gallery._db  # the raw collections: no documents of the removed person anywhere
        assert db["people"].count_documents({}) == 1
        assert db["templates"].count_documents({}) == 3
        assert db["templates"].count_documents({"source": {"$regex": "Zebulon"}}) == 0
    else:
        assert isinstance(gallery, SQLiteGallery)
        assert gallery.checkpoint()
        files = [p for p in gallery.path.parent.iterdir() if p.name.startswith(gallery.path.name)]
        data = b"".join(p.read_bytes() for p in files)
        assert b"Keep Me" in data  # the check can see names at all
        assert b"Zebulon" not in data and b"THUMB-" not in data


def test_duplicate_name_refused_nothing_written(gallery):
    gallery.add_person("Ann", templates=make_templates(2))
    stamp = gallery.change_stamp()
    with pytest.raises(PersonExists, match="Ann"):
        gallery.add_person(" Ann ", templates=make_templates(5, seed=3))
    assert counts(gallery) == (1, 2)
    assert gallery.change_stamp() == stamp
    gallery.add_person("Bob")
    with pytest.raises(PersonExists):
        gallery.rename("Bob", "Ann")
    assert [p.name for p in gallery.list_people()] == ["Ann", "Bob"]


def test_bad_templates_refused_nothing_written(gallery):
    gallery.add_person("Ann", templates=make_templates(2, dim=16))
    bad = make_templates(2, dim=16)
    bad.append(Template("", np.full(16, np.nan, np.float32), EMB, VER))
    with pytest.raises(GalleryError, match="finite"):
        gallery.add_templates("Ann", bad)
    with pytest.raises(GalleryError, match="dimensions"):
        gallery.add_person("Bob", templates=make_templates(2, dim=8))
    with pytest.raises(PersonNotFound):
        gallery.add_templates("Nobody", make_templates(1))
    assert counts(gallery) == (1, 2)


# --------------------------------------------------------------------------- search


def test_embedders_are_never_mixed(gallery):
    gallery.add_person("Ann", templates=make_templates(3, seed=1))
    gallery.add_person("Old", templates=make_templates(3, seed=2, embedder="arcface", version="2"))
    gallery.add_person("Both", templates=make_templates(2, seed=3) + make_templates(2, seed=4, version="0"))
    names, emb, _ = gallery.templates(EMB, VER)
    assert sorted(set(names)) == ["Ann", "Both"] and len(names) == 5
    probe = make_templates(1, seed=2)[0].embedding  # identical to one of Old's arcface templates
    [(name, sim)] = gallery.search(probe[None], embedder=EMB, embedder_version=VER, threshold=-1)
    assert name != "Old" and sim < 0.999
    assert gallery.embedders_in_use() == {(EMB, VER): 2, ("arcface", "2"): 1, (EMB, "0"): 1}
    msg = gallery.other_embedders_message(EMB, VER)
    assert msg is not None and msg.startswith("1 person was") and "arcface v2" in msg and "maskwatch people add" in msg
    assert gallery.other_embedders_message("nothing", "1").startswith("3 people were")


def test_search_is_exact(gallery):
    rng = np.random.default_rng(7)
    dim, per_person = 32, 20
    for i in range(100):  # 2,000 templates, every second one masked
        emb = unit(rng.normal(size=(per_person, dim)))
        gallery.add_person(f"p{i:03d}", templates=[
            Template("", emb[j], EMB, VER, masked=bool(j % 2), synthetic=bool(j % 2)) for j in range(per_person)])
    names, emb, masked = gallery.templates(EMB, VER)
    assert emb.shape == (2000, dim) and masked.sum() == 1000
    probes = unit(emb[rng.choice(2000, 40)] + rng.normal(scale=0.3, size=(40, dim)))
    probe_masked = rng.random(40) < 0.5
    got = gallery.search(probes, probe_masked, embedder=EMB, embedder_version=VER, threshold=0.5,
                         masked_threshold=0.3)
    for p, m, (name, sim) in zip(probes, probe_masked, got, strict=True):
        sel = masked == m
        sims = emb[sel] @ p
        best = int(np.argmax(sims))
        assert sim == pytest.approx(float(sims[best]), abs=1e-5)
        assert name == (names[sel][best] if sims[best] >= (0.3 if m else 0.5) else None)
    assert any(n is None for n, _ in got) and any(n is not None for n, _ in got)


def test_matcher_is_cached_and_sees_other_objects_writes(gallery, gallery_url):
    gallery.add_person("Ann", templates=make_templates(2, seed=1))
    m1 = gallery.matcher(EMB, VER, max_age_s=0)
    assert gallery.matcher(EMB, VER, max_age_s=0) is m1  # unchanged store: same object
    assert gallery.matcher(EMB, VER, max_age_s=60) is m1
    other = open_gallery(gallery_url)
    try:
        probe = make_templates(1, seed=9)[0].embedding[None]
        other.add_person("Cid", templates=make_templates(1, seed=9))
        assert gallery.matcher(EMB, VER, max_age_s=60) is m1  # not looked at yet
        m2 = gallery.matcher(EMB, VER, max_age_s=0)
        assert m2 is not m1 and sorted(set(m2.names)) == ["Ann", "Cid"]
        assert gallery.search(probe, embedder=EMB, embedder_version=VER, max_age_s=0)[0][0] == "Cid"
        other.rename("Cid", "Cyd")
        assert gallery.search(probe, embedder=EMB, embedder_version=VER, max_age_s=0)[0][0] == "Cyd"
        other.remove_person("Cyd")
        assert gallery.search(probe, embedder=EMB, embedder_version=VER, max_age_s=0)[0][0] is None
        live = gallery.live_matcher(EMB, VER, max_age_s=0)
        other.add_person("Dee", templates=make_templates(1, seed=9))
        assert live.identify(probe, np.array([False]))[0][0] == "Dee"
    finally:
        other.close()


# --------------------------------------------------------------------------- export / import


def test_export_import_round_trip(gallery, make_url, tmp_path):
    gallery.add_person("Ann", templates=make_templates(4, seed=1), thumbnail=b"\xff\xd8thumb")
    gallery.add_person("Bob", templates=make_templates(3, seed=2) + make_templates(1, seed=3, embedder="x"))
    gallery.add_person("Empty")
    path = tmp_path / "export.jsonl"
    assert gallery.export(path) == 3
    header = json.loads(path.read_text().splitlines()[0])
    assert header["format"] == "maskwatch-gallery"
    assert not list(tmp_path.glob("*.tmp-*"))

    target = open_gallery(make_url())
    try:
        assert target.import_(path) == 3
        for name in ("Ann", "Bob", "Empty"):
            a, b = gallery.get_person(name), target.get_person(name)
            assert (a.templates, a.synthetic_templates, a.thumbnail) == (b.templates, b.synthetic_templates, b.thumbnail)
            assert a.created == pytest.approx(b.created)
            ta, tb = gallery.templates_of(name), target.templates_of(name)
            for x, y in zip(ta, tb, strict=True):
                assert np.array_equal(x.embedding, y.embedding)
                assert (x.embedder, x.embedder_version, x.masked, x.synthetic, x.source) == \
                       (y.embedder, y.embedder_version, y.masked, y.synthetic, y.source)
        stamp = target.change_stamp()
        with pytest.raises(PersonExists, match="nothing was imported"):
            target.import_(path)
        assert target.change_stamp() == stamp and counts(target) == counts(gallery)
        target.remove_person("Ann")
        assert target.import_(path, replace=True) == 3
        assert counts(target) == counts(gallery)
    finally:
        target.close()


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty"),
        ("not json\n", "not a maskwatch gallery export"),
        ('{"format": "maskwatch-gallery", "version": 99}\n', "version 99"),
        ('{"format": "maskwatch-gallery", "version": 1}\n{"name": "a/b", "templates": []}\n', "line 2"),
        ('{"format": "maskwatch-gallery", "version": 1}\n{"name": "A"}\n{"name": "A"}\n', "twice"),
        ('{"format": "maskwatch-gallery", "version": 1}\n{"name": "A", "templates": [{"embedding": "!!"}]}\n',
         "line 2"),
    ],
)
def test_import_refuses_bad_files_nothing_written(gallery, tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(GalleryError, match=message):
        gallery.import_(path)
    assert counts(gallery) == (0, 0)


# --------------------------------------------------------------------------- concurrency


def test_concurrent_writers_and_readers(gallery, gallery_url):
    errors: list[BaseException] = []
    done = threading.Event()
    searches = [0] * 4

    def writer(w: int) -> None:
        g = gallery if w % 2 == 0 else open_gallery(gallery_url)  # shared object and own objects
        try:
            for i in range(8):
                g.add_person(f"w{w}-{i}", templates=make_templates(5, seed=100 * w + i))
            g.rename(f"w{w}-0", f"w{w}-renamed")
            g.remove_person(f"w{w}-1")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            if g is not gallery:
                g.close()

    def reader(r: int) -> None:
        probe = make_templates(1, seed=r)[0].embedding[None]
        try:
            while not done.is_set() or searches[r] == 0:
                gallery.search(probe, embedder=EMB, embedder_version=VER, max_age_s=0)
                gallery.list_people()
                searches[r] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    readers = [threading.Thread(target=reader, args=(r,)) for r in range(4)]
    writers = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(60)
    done.set()
    for t in readers:
        t.join(60)
    assert not errors, errors
    assert all(searches)
    people = gallery.list_people()
    assert len(people) == 4 * 7 and sum(p.templates for p in people) == 4 * 7 * 5
    assert {f"w{w}-renamed" for w in range(4)} <= {p.name for p in people}
    assert len(gallery.templates(EMB, VER)[0]) == 4 * 7 * 5
    assert set(gallery.matcher(EMB, VER, max_age_s=0).names) == {p.name for p in people}


# --------------------------------------------------------------------------- opening stores


def test_open_gallery_locations(tmp_path, monkeypatch):
    monkeypatch.setenv("MASKWATCH_HOME", str(tmp_path / "home"))
    with open_gallery() as g:
        assert Path(g.location) == tmp_path / "home" / "gallery.sqlite3"
        g.add_person("Ann")
    with open_gallery("") as g:
        assert [p.name for p in g.list_people()] == ["Ann"]
    assert (tmp_path / "home" / "gallery.sqlite3").stat().st_mode & 0o077 == 0  # owner only
    monkeypatch.delenv("MASKWATCH_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    with open_gallery(None) as g:
        assert Path(g.location) == tmp_path / "xdg" / "maskwatch" / "gallery.sqlite3"
    with open_gallery(f"sqlite:///{tmp_path}/u.db") as g:
        assert Path(g.location) == tmp_path / "u.db"
    monkeypatch.chdir(tmp_path)
    with open_gallery("sqlite:///rel.db") as g:
        assert Path(g.location) == Path("rel.db")


@pytest.mark.parametrize(
    "db, message",
    [
        ("postgres://host/db", "unsupported"),
        ("sqlite:/x", "not a SQLite URL"),
        (":memory:", "in-memory"),
        ("mongodb://", "invalid MongoDB URL"),
        ("mongodb://host:notaport/db", "invalid MongoDB URL"),
    ],
)
def test_open_gallery_bad_locations(db, message):
    if db.startswith("mongodb"):
        pytest.importorskip("pymongo")
    start = time.monotonic()
    with pytest.raises(GalleryError, match=message):
        open_gallery(db)
    assert time.monotonic() - start < 5


def test_not_a_gallery_file(tmp_path):
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a database" * 100)
    with pytest.raises(GalleryError, match="not a maskwatch gallery"):
        open_gallery(bad)
    with pytest.raises(GalleryError, match="folder"):
        open_gallery(tmp_path)


def test_mongo_down_server_fails_fast():
    pytest.importorskip("pymongo")
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    g = open_gallery(f"mongodb://user:s3cret@127.0.0.1:{port}/x")  # opening does not block
    try:
        start = time.monotonic()
        with pytest.raises(GalleryUnavailable) as info:
            g.list_people()
        assert time.monotonic() - start < 5
        msg = str(info.value)
        assert f"127.0.0.1:{port}" in msg and "s3cret" not in msg and "cannot be reached" in msg
        # the engine's view: first look-up fails fast, later ones fail at once, faces unrecognised
        with pytest.raises(GalleryUnavailable):
            g.matcher(EMB, VER)
        start = time.monotonic()
        live = g.live_matcher(EMB, VER)
        assert live.identify(np.ones((2, 16), np.float32), np.zeros(2, bool)) == [(None, 0.0)] * 2
        assert time.monotonic() - start < 0.5
    finally:
        g.close()


def test_sqlite_locked_by_another_writer(tmp_path):
    import sqlite3

    g = SQLiteGallery(tmp_path / "g.sqlite3", busy_timeout_s=0.3)
    g.add_person("Ann", templates=make_templates(2))
    other = sqlite3.connect(tmp_path / "g.sqlite3", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        start = time.monotonic()
        with pytest.raises(GalleryUnavailable, match="locked"):
            g.add_person("Bob")
        assert time.monotonic() - start < 3
        assert [p.name for p in g.list_people()] == ["Ann"]  # readers go on (WAL)
        assert g.search(make_templates(1)[0].embedding[None], embedder=EMB, embedder_version=VER)[0][0] == "Ann"
        other.execute("ROLLBACK")
        g.add_person("Bob")
        assert counts(g) == (2, 2)
    finally:
        other.close()
        g.close()


def test_mongo_without_transactions(mongo_server, tmp_path):
    """Standalone MongoDB servers have no transactions: ordered writes, nothing half-visible."""
    g = open_gallery(f"{mongo_server}/notxn_{uuid.uuid4().hex[:8]}")
    try:
        g._ensure()
        g._transactions = False
        g.add_person("Ann", templates=make_templates(3, seed=1))
        with pytest.raises(PersonExists):
            g.add_person("Ann", templates=make_templates(3, seed=2))
        with pytest.raises(PersonExists):
            g.export(tmp_path / "ann.jsonl")
            g.import_(tmp_path / "ann.jsonl", replace=False)
        assert counts(g) == (1, 3) and g._templates_c.count_documents({}) == 3
        # an interrupted write leaves orphan templates: invisible, and swept by the next removal
        g._templates_c.insert_one({"person_id": "gone", "embedder": EMB, "embedder_version": VER, "dim": 16,
                                   "embedding": make_templates(1)[0].embedding.tobytes(), "masked": False,
                                   "synthetic": False, "source": ""})
        assert len(g.templates(EMB, VER)[0]) == 3 and g.embedders_in_use() == {(EMB, VER): 1}
        g.add_person("Bob", templates=make_templates(2, seed=3))
        g.rename("Bob", "Rob")
        assert g.remove_person("Ann") == 3
        assert g._templates_c.count_documents({}) == 2 and [p.name for p in g.list_people()] == ["Rob"]
    finally:
        g._db.client.drop_database(g._db.name)
        g.close()
