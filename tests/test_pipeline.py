"""The engine on real video and photos (needs ../shared/datasets)."""

import numpy as np
import pytest

from maskwatch.pipeline import FrameResult, Pipeline, PipelineConfig
from maskwatch.sources import Frame, open_source
from maskwatch.types import MASK_CLASSES


@pytest.fixture(scope="module")
def video_results(datasets):
    engine = Pipeline(PipelineConfig())
    results: list[FrameResult] = []
    ended = []
    with open_source(str(datasets / "videos" / "short_hamilton_clip.mp4")) as src:
        for item in src:
            assert isinstance(item, Frame)
            r = engine.process(item.image, item.index, item.timestamp)
            results.append(r)
            ended += r.ended
    ended += engine.finish()
    return results, ended


def test_every_frame_has_timings_and_consistent_fields(video_results):
    results, _ = video_results
    assert len(results) == 275
    for r in results:
        n = len(r.faces)
        assert len(r.faces.mask_labels) == len(r.faces.names) == len(r.faces.similarities) == n
        assert {"detect", "track", "classify", "total"} <= set(r.timings_ms)
        assert r.faces.has_mask_probs or n == 0
        assert (r.faces.track_ids >= 1).all()


def test_region_detection_between_full_passes_keeps_the_faces(datasets, video_results):
    """Between full passes the detector looks only around tracked faces; it must still
    find (nearly) every face that a full pass on every frame finds."""
    results, _ = video_results
    full = Pipeline(PipelineConfig(detect_every=1))
    counts = []
    with open_source(str(datasets / "videos" / "short_hamilton_clip.mp4")) as src:
        for item in src:
            counts.append(len(full.process(item.image, item.index, item.timestamp).faces))
    every_frame = sum(counts)
    regions = sum(len(r.faces) for r in results)
    assert every_frame > 700
    assert abs(regions - every_frame) <= 0.02 * every_frame, (regions, every_frame)
    fewer = sum(len(r.faces) < n for r, n in zip(results, counts, strict=True))
    assert fewer <= 0.1 * len(results), fewer


def test_tracks_keep_ids_across_the_video(video_results):
    results, ended = video_results
    ids = [int(t) for r in results for t in r.faces.track_ids]
    faces_total = len(ids)
    assert faces_total > 275  # several people in most frames
    # Long tracks: most face observations belong to tracks that last 20+ frames (the
    # clip cuts between shots every 64 frames or so).
    lengths = {t: ids.count(t) for t in set(ids)}
    assert sum(v for v in lengths.values() if v >= 20) / faces_total > 0.9
    # Every track is ended exactly once, with its mask history.
    assert sorted(t.track_id for t in ended) == sorted(set(ids))
    for t in ended:
        assert sum(t.mask_counts.values()) <= t.hits


def test_smoothed_labels_agree_with_per_frame_classifier_and_never_flicker(video_results):
    results, _ = video_results
    by_track: dict[int, list[str]] = {}
    for r in results:
        for tid, lab in zip(r.faces.track_ids, r.faces.mask_labels, strict=True):
            if lab is not None:
                by_track.setdefault(int(tid), []).append(lab)
    for labels in by_track.values():
        runs = []
        for lab in labels:
            if runs and runs[-1][0] == lab:
                runs[-1][1] += 1
            else:
                runs.append([lab, 1])
        inner = runs[1:-1]
        assert all(n > 1 for _, n in inner), runs  # no single-frame label inside a track


def test_untracked_mode_classifies_every_face(datasets):
    from maskwatch.ops.image import read_image

    engine = Pipeline(PipelineConfig.accurate())
    r = engine.process(read_image(datasets / "group-photos" / "t1.jpg"))
    assert len(r.faces) == 6
    assert all(lab in MASK_CLASSES for lab in r.faces.mask_labels)
    assert (r.faces.track_ids == -1).all()
    d = r.to_dict()
    assert len(d["faces"]) == 6 and "classify" in d["timings_ms"]


def test_blank_frames(datasets):
    engine = Pipeline()
    for i in range(3):
        r = engine.process(np.zeros((480, 640, 3), np.uint8), i, i / 30)
        assert len(r.faces) == 0 and r.faces.mask_labels.tolist() == []


@pytest.mark.parametrize("reclassify_change", [15.0, 0.0])
def test_a_mask_put_on_is_shown_within_frames(datasets, reclassify_change):
    """A still face puts a mask on at frame 14, two frames after a scheduled look
    (looks at 0, 1, 2, then every 10: 12, 22). The colour-change check has it
    classified again at once instead of at the next scheduled look."""
    from maskwatch.models.detector import YuNetDetector
    from maskwatch.ops.image import read_image
    from maskwatch.ops.synthmask import render_mask

    image = read_image(datasets / "identity-examples" / "examples" / "alex-lacamoire.png")
    faces = YuNetDetector().detect(image)
    masked = render_mask(image, faces.landmarks[0], faces.boxes[0], position="proper",
                         rng=np.random.default_rng(0))
    engine = Pipeline(PipelineConfig(reclassify_change=reclassify_change))
    labels = []
    for k in range(40):
        r = engine.process(image if k < 14 else masked, k, k / 30)
        assert len(r.faces) == 1
        labels.append(r.faces.mask_labels[0])
    assert labels[:14] == ["without_mask"] * 14
    first = labels.index("with_mask")
    assert set(labels[first:]) == {"with_mask"}
    if reclassify_change:
        assert first <= 15, labels  # 3 frames after the look at 12
    else:
        assert first == 22, labels  # the next scheduled look


# -- faces too dark to judge -------------------------------------------------------------


@pytest.fixture(scope="module")
def lfw_photo_and_dark_copy(datasets):
    """An LFW photo and a copy darkened until its face has a mean luma of about 7."""
    from maskwatch.ops.image import read_image
    from maskwatch.ops.quality import face_quality

    image = read_image(datasets / "lfw-identities" / "images" / "Abdullah_Gul"
                       / "Abdullah_Gul_0001.jpg")
    engine = Pipeline(PipelineConfig.accurate())
    faces = engine.process(image).faces
    clf = engine.classifier
    luma = face_quality(clf.crops(image, faces), faces.sizes, clf.info.margin).luma[0]
    dark = (image.astype(np.float32) * (7.0 / luma)).round().astype(np.uint8)
    return image, dark


def test_a_dark_photo_is_shown_as_cannot_judge(lfw_photo_and_dark_copy):
    from maskwatch.ops.quality import QualityRule
    from maskwatch.types import UNKNOWN_MASK

    image, dark = lfw_photo_and_dark_copy
    engine = Pipeline(PipelineConfig.accurate())  # the default rule: luma >= 8
    lit = engine.process(image)
    assert lit.faces.mask_labels.tolist() == ["without_mask"]
    r = engine.process(dark)
    assert len(r.faces) == 1 and r.faces.mask_labels.tolist() == [UNKNOWN_MASK]
    assert r.faces.has_mask_probs and "quality" in r.timings_ms  # the probabilities are kept
    face = r.to_dict()["faces"][0]
    assert face["mask"] == "unknown" and set(face["mask_probs"]) == set(MASK_CLASSES)
    # drawn in grey, without a probability
    from maskwatch.draw import MASK_COLORS, FaceAnnotator

    drawn = FaceAnnotator().annotate(dark, r)
    x1, y1, x2, y2 = (int(round(v)) for v in r.faces.boxes[0])
    left_edge = drawn[(y1 + y2) // 2, x1].astype(int)
    assert np.abs(left_edge - MASK_COLORS[UNKNOWN_MASK]).max() <= 40
    lit_drawn = FaceAnnotator().annotate(image, lit)
    x1, y1, x2, y2 = (int(round(v)) for v in lit.faces.boxes[0])
    assert np.abs(lit_drawn[(y1 + y2) // 2, x1].astype(int)
                  - MASK_COLORS["without_mask"]).max() <= 40
    # without the rule the classifier's answer is shown, whatever the light
    off = Pipeline(PipelineConfig.accurate(quality=QualityRule()))
    r_off = off.process(dark)
    assert r_off.faces.mask_labels[0] in MASK_CLASSES and "quality" not in r_off.timings_ms


def test_a_dark_face_in_video_is_not_classified_until_the_light_comes_up(
        lfw_photo_and_dark_copy):
    from maskwatch.types import UNKNOWN_MASK

    image, dark = lfw_photo_and_dark_copy
    engine = Pipeline(PipelineConfig(detect_every=1))
    shown = []
    for i in range(16):
        r = engine.process(dark if i < 8 else image, i, i / 25)
        assert len(r.faces) == 1
        shown.append(r.faces.mask_labels[0])
        if i == 7:
            track = engine.tracker.live[int(r.faces.track_ids[0])]
            assert track.classifications == 0 and track.mask_label is None
    # dark: cannot judge, never classified; lit: judged after 2 frames (the hold)
    assert shown == [UNKNOWN_MASK] * 9 + ["without_mask"] * 7
    [track] = engine.finish()
    assert track.mask_counts["unknown"] == 9 and track.mask_counts["without_mask"] == 7
