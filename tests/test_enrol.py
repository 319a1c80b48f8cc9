"""Mask-aware enrolment on real photos (YuNet + SFace), into a SQLite gallery."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from maskwatch.enrol import EnrolError, enrol_photos
from maskwatch.gallery import InvalidName, PersonExists, open_gallery
from maskwatch.models.detector import YuNetDetector
from maskwatch.models.embedder import SFaceEmbedder
from maskwatch.ops.image import read_image
from maskwatch.ops.synthmask import MaskStyle, render_mask
from maskwatch.recognition import EmbeddingMatcher

THRESHOLD, MASKED_THRESHOLD = 0.4, 0.45  # SFace cosine; true matches here score >= 0.55
PEOPLE = ["alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"]
# masks unlike the enrolment ones (light blue surgical, black cloth, white KN95, white N95)
PROBE_STYLES = [MaskStyle("surgical", (60, 120, 180), "pleats", 1.0, True),
                MaskStyle("cloth", (70, 40, 140), "check", 0.95, True)]


@pytest.fixture(scope="module")
def models():
    return YuNetDetector(), SFaceEmbedder()


@pytest.fixture(scope="module")
def examples(datasets: Path) -> Path:
    return datasets / "identity-examples" / "examples"


@pytest.fixture(scope="module")
def enrolled(examples, models, tmp_path_factory):
    """A gallery with the five people of ``knn_examples/train`` (4 synthetic masks per photo)."""
    det, emb = models
    g = open_gallery(tmp_path_factory.mktemp("enrol") / "g.sqlite3")
    for name in PEOPLE:
        photos = sorted((examples / "knn_examples" / "train" / name).iterdir())
        # biden2.jpg shows three people: the largest face is Biden's
        enrol_photos(g, name, photos, detector=det, embedder=emb, pick_largest=True)
    yield g
    g.close()


@pytest.fixture
def gallery(tmp_path):
    g = open_gallery(tmp_path / "g.sqlite3")
    yield g
    g.close()


def faces_and_embeddings(path: Path, models):
    det, emb = models
    img = read_image(path)
    faces = det.detect(img)
    return img, faces, emb.embed(img, faces)


def test_templates_written(enrolled, examples, models):
    _, emb = models
    for p in enrolled.list_people():
        n_photos = len(list((examples / "knn_examples" / "train" / p.name).iterdir()))
        assert (p.templates, p.synthetic_templates) == (5 * n_photos, 4 * n_photos)
        assert p.thumbnail is None
    temps = enrolled.templates_of("obama")
    assert {(t.embedder, t.embedder_version) for t in temps} == {(emb.name, emb.version)}
    assert all(t.masked == t.synthetic for t in temps)
    assert all("/" not in t.source for t in temps)
    shapes = {t.source.split("#mask-")[1] for t in temps if t.synthetic}
    assert shapes == {"surgical", "cloth", "kn95", "n95"}
    assert enrolled.embedders_in_use() == {(emb.name, emb.version): 5}


@pytest.mark.parametrize(
    "photo, expected",
    [
        ("knn_examples/test/alex_lacamoire1.jpg", ["alex_lacamoire"]),
        ("knn_examples/test/johnsnow_test1.jpg", ["kit_harington"]),
        ("knn_examples/test/kit_with_rose.jpg", ["kit_harington", "rose_leslie"]),
        ("knn_examples/test/obama1.jpg", ["obama"]),
        ("knn_examples/test/obama_and_biden.jpg", [None, "biden", "obama"]),  # a third, unknown man
        ("two_people.jpg", ["biden", "obama"]),
        ("lin-manuel-miranda.png", [None]),  # not enrolled
    ],
)
def test_recognises_unmasked_faces(enrolled, examples, models, photo, expected):
    _, emb = models
    _, faces, probes = faces_and_embeddings(examples / photo, models)
    got = enrolled.search(probes, embedder=emb.name, embedder_version=emb.version,
                          threshold=THRESHOLD, masked_threshold=MASKED_THRESHOLD)
    assert all((sim >= THRESHOLD) == (name is not None) for name, sim in got)
    assert sorted((n for n, _ in got), key=lambda n: (n is not None, n or "")) == expected


@pytest.mark.parametrize(
    "photo, expected",
    [
        ("knn_examples/test/alex_lacamoire1.jpg", ["alex_lacamoire"]),
        ("knn_examples/test/johnsnow_test1.jpg", ["kit_harington"]),
        ("knn_examples/test/kit_with_rose.jpg", ["kit_harington", "rose_leslie"]),
        ("knn_examples/test/obama1.jpg", ["obama"]),
        ("alex-lacamoire.png", ["alex_lacamoire"]),
    ],
)
def test_recognises_masked_faces_through_masked_templates(enrolled, examples, models, photo,
                                                          expected):
    det, emb = models
    img, faces, _ = faces_and_embeddings(examples / photo, models)
    names, templates, masked = enrolled.templates(emb.name, emb.version)
    plain_only = EmbeddingMatcher(names[~masked], templates[~masked], masked[~masked])
    m = enrolled.matcher(emb.name, emb.version, THRESHOLD, MASKED_THRESHOLD)
    gain = []
    for k, style in enumerate(PROBE_STYLES):
        probes = np.stack([
            emb.embed(render_mask(img, faces.landmarks[i], faces.boxes[i], style=style,
                                  rng=np.random.default_rng(10 + k)), faces[i])[0]
            for i in range(len(faces))])
        got = m.identify(probes, np.ones(len(probes), bool))
        assert sorted(n for n, _ in got) == expected
        plain = plain_only.identify(probes, np.zeros(len(probes), bool))
        gain += [s - p for (_, s), (_, p) in zip(got, plain, strict=True)]
    assert np.mean(gain) > 0.02  # synthetic masked templates are closer to masked faces


# --------------------------------------------------------------------------- refusals


def state(g):
    return g.change_stamp(), [(p.name, p.templates) for p in g.list_people()]


@pytest.fixture
def bad_photos(tmp_path):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((480, 640, 3), 200, np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_text("this is not a photo")
    return {"blank": blank, "broken": broken, "missing": tmp_path / "missing.jpg"}


def test_refusals_write_nothing(gallery, datasets, examples, models, bad_photos):
    det, emb = models
    good = examples / "obama.jpg"
    group = datasets / "group-photos" / "t1.jpg"
    before = state(gallery)
    cases = [
        ("Ann", [bad_photos["blank"]], EnrolError, f"no face found in {bad_photos['blank']}"),
        ("Ann", [good, bad_photos["blank"]], EnrolError, "no face found in"),
        ("Ann", [group], EnrolError, f"6 faces in {group}; use --largest to enrol the largest"),
        ("Ann", [good, bad_photos["broken"]], EnrolError,
         "cannot use .*broken.jpg.*not a readable image"),
        ("Ann", [bad_photos["missing"]], EnrolError, "missing.jpg: no such file"),
        ("Ann", [], EnrolError, "no photos"),
        ("", [good], InvalidName, "empty"),
        ("../etc/passwd", [good], InvalidName, "cannot contain"),
    ]
    for name, photos, error, message in cases:
        with pytest.raises(error, match=message) as info:
            enrol_photos(gallery, name, photos, detector=det, embedder=emb)
        assert "\n" not in str(info.value)
        assert state(gallery) == before, (name, photos)


def test_largest_face_duplicates_and_thumbnail(gallery, datasets, examples, models):
    det, emb = models
    group = datasets / "group-photos" / "t1.jpg"
    res = enrol_photos(gallery, "Someone", [group], detector=det, embedder=emb, pick_largest=True,
                       synthetic_masks=2, thumbnail=True)
    assert res.created and (res.templates, res.synthetic_templates) == (3, 2)
    thumb = gallery.get_person("Someone").thumbnail
    img = cv2.imdecode(np.frombuffer(thumb, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and max(img.shape[:2]) <= 96

    before = state(gallery)
    with pytest.raises(PersonExists, match="Someone"):
        enrol_photos(gallery, "Someone", [examples / "obama.jpg"], detector=det, embedder=emb)
    assert state(gallery) == before
    res = enrol_photos(gallery, "Someone", [examples / "obama.jpg"], detector=det, embedder=emb,
                       synthetic_masks=0, add_to_existing=True)
    assert not res.created and res.templates == 1 and res.person.templates == 4

    arr = read_image(examples / "biden.jpg")  # arrays work as photos too
    res = enrol_photos(gallery, "Array", [arr], detector=det, embedder=emb, synthetic_masks=1)
    assert res.templates == 2 and gallery.templates_of("Array")[0].source == "array-1"


def test_model_work_and_store_work_are_separate_steps(tmp_path, examples, models):
    """The web service runs prepare_enrolment's model steps on its inference thread and
    store_enrolment elsewhere: a gallery locked by another writer holds up only the
    store step, and the result is the same as enrol_photos'."""
    import sqlite3

    from maskwatch.enrol import prepare_enrolment, store_enrolment
    from maskwatch.gallery import GalleryUnavailable
    from maskwatch.gallery.sqlite import SQLiteGallery

    det, emb = models
    photos = [examples / "obama.jpg", read_image(examples / "obama.jpg")]
    steps: list[str] = []

    def run_model(step):
        steps.append(getattr(step, "func", step).__name__)
        return step()

    g = SQLiteGallery(tmp_path / "g.sqlite3", busy_timeout_s=0.3)
    other = sqlite3.connect(tmp_path / "g.sqlite3", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        prepared = prepare_enrolment(" Barack ", photos, detector=det, embedder=emb, thumbnail=True,
                                     synthetic_masks=2, run_model=run_model)
        # every photo checked first
        assert steps == ["detect", "detect", "_embed_each", "_embed_each"]
        assert prepared.name == "Barack" and prepared.photos == 2 and len(prepared.templates) == 6
        with pytest.raises(GalleryUnavailable, match="locked"):
            store_enrolment(g, prepared)
        assert g.list_people() == []
        other.execute("ROLLBACK")
        res = store_enrolment(g, prepared)
        assert res.created and res.templates == 6 and res.person.thumbnail
        with pytest.raises(PersonExists):
            store_enrolment(g, prepared)
        assert not store_enrolment(g, prepared, add_to_existing=True).created

        ref = open_gallery(tmp_path / "ref.sqlite3")
        try:
            enrol_photos(ref, "Barack", photos, detector=det, embedder=emb, synthetic_masks=2)
            mine = [t.embedding for t in g.templates_of("Barack")[:6]]
            theirs = [t.embedding for t in ref.templates_of("Barack")]
            assert len(mine) == len(theirs) == 6
            assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(mine, theirs, strict=True))
        finally:
            ref.close()
    finally:
        other.close()
        g.close()
