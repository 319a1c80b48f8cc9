"""evaluate --task tracking: smoothed labels against the per-frame classifier."""

import json

import pytest

from maskwatch.evaluate.tracking import single_frame_flickers
from maskwatch.tracking import TrackerConfig


@pytest.mark.parametrize(
    "labels, flickers",
    [
        ([], 0),
        (["a"], 0),
        (["a", "b"], 0),
        (["a", "b", "a"], 1),
        (["a", "b", "b", "a"], 0),
        (["a", "b", "a", "b", "a"], 3),
        (["a", "b", "c"], 0),
    ],
)
def test_single_frame_flickers(labels, flickers):
    assert single_frame_flickers(labels) == flickers


def test_tracking_on_the_shared_clip(datasets, tmp_path):
    from maskwatch.cli import main

    video = datasets / "videos" / "short_hamilton_clip.mp4"
    assert main(["evaluate", "--task", "tracking", str(video), "--out", str(tmp_path), "-q",
                 "--truth", "without_mask"]) == 0
    res = json.loads((tmp_path / "tracking.json").read_text())
    assert res["frames"] == 275 and res["face_frames"] > 700
    assert res["flickers_shown"] == 0  # never a single-frame label inside a track
    # judged face-frames: measured 98.4% (98.4% before contested tracks were shown as
    # unknown: the dark half-hidden face the classifier hesitates on)
    assert res["agreement"] >= 0.97
    # the point of tracking (measured 175 classifier calls of 747)
    assert res["classifier_calls"] < res["face_frames"] / 3
    report = (tmp_path / "tracking.md").read_text()
    assert "agreement, all judged face-frames" in report
    shown = sum(sum(row.values()) for row in res["confusion_per_frame_vs_shown"].values())
    assert shown == res["face_frames"] and "Shown labels in all: with_mask" in report
    # the default rule (luma >= 8) and contested tracks on the clip, where nobody wears a
    # mask: measured 50 of 747 face-frames unknown (6.7%: 5 by the rule, 45 contested);
    # 2 of the 697 judged say a mask (0.3%; issue 14 asks for at most 2% and 10% unknown)
    assert res["config"]["quality"]["min_luma"] == 8
    assert sum(res["shown"].values()) == res["face_frames"]
    assert res["unknown_face_frames"] == res["shown"]["unknown"] > 0
    assert res["judged_face_frames"] == res["face_frames"] - res["unknown_face_frames"]
    assert res["truth"] == "without_mask"
    assert res["shown_wrong"] == res["shown_says_mask"] < 0.02 * res["judged_face_frames"]
    assert 0 < res["unknown_contested"] < res["unknown_face_frames"] < 0.1 * res["face_frames"]
    assert "contested, the classifier changing its mind" in report
    # the per-frame classifier's errors lie on the dark faces (luma 10-15: measured 19%;
    # 30-50: none); the rule takes the darkest (5 of the 34 face-frames under 10)
    by_luma = {r["bin"]: r for r in res["per_frame_by_luma"]}
    assert sum(r["n"] for r in by_luma.values()) == res["face_frames"]
    assert by_luma["10-15"]["says_mask_share"] > 0.1 and by_luma["30-50"]["says_mask_share"] < 0.05
    assert 0 < by_luma["<10"]["shown_unknown_share"] < 1.0
    assert sum(r["n"] for r in res["per_frame_by_sharpness"]) == res["face_frames"]
    assert "Per-frame classifier by mean luma" in report


def test_without_the_rule_every_face_is_judged(datasets):
    from maskwatch.evaluate.tracking import evaluate_tracking
    from maskwatch.ops.quality import QualityRule

    video = datasets / "videos" / "short_hamilton_clip.mp4"
    res = evaluate_tracking(video, None, progress=False, quality=QualityRule(),
                            tracker=TrackerConfig(contest_changes=0), truth="without_mask")
    # measured 34 of 747 shown labels say a mask (102 with the classifier before covers)
    assert res["unknown_face_frames"] == 0 and res["judged_face_frames"] == res["face_frames"]
    assert 0 < res["shown_says_mask_share"] < 0.08 and res["flickers_shown"] == 0
    assert res["unknown_contested"] == 0


def test_contested_tracks_halve_the_wrong_mask_labels_on_the_clip(datasets):
    from maskwatch.evaluate.tracking import evaluate_tracking

    video = datasets / "videos" / "short_hamilton_clip.mp4"
    before = evaluate_tracking(video, None, progress=False, truth="without_mask",
                               tracker=TrackerConfig(contest_changes=0, settle_confidence=0.7,
                                                     switch_confidence=0.5))
    now = evaluate_tracking(video, None, progress=False, truth="without_mask")
    # measured 33 of 742 judged labels say a mask (4.4%), now 2 of 697 (0.3%); unknown
    # 5 face-frames (0.7%), now 50 (6.7%)
    assert now["shown_says_mask"] <= before["shown_says_mask"] / 2
    assert now["unknown_share"] < 0.1 and now["flickers_shown"] == 0


def test_unsure_tracks_looked_at_until_confident_raise_agreement(datasets):
    from maskwatch.evaluate.tracking import evaluate_tracking

    video = datasets / "videos" / "short_hamilton_clip.mp4"
    old = evaluate_tracking(video, None, progress=False, tracker=TrackerConfig(
        settle_confidence=0.0, switch_frames=3, switch_confidence=None, contest_changes=0))
    new = evaluate_tracking(video, None, progress=False, tracker=TrackerConfig(
        settle_confidence=0.7, switch_confidence=None, contest_changes=0))
    assert new["agreement"] > old["agreement"] + 0.005  # measured 97.3% against 96.5%
    assert new["agreement_confident"] >= 0.985  # measured 99.4%
    assert new["flickers_shown"] == 0
    assert new["classifier_calls"] < new["face_frames"] / 4  # measured 146 of 747


def test_decisive_looks_raise_agreement(datasets):
    from maskwatch.evaluate.tracking import evaluate_tracking

    video = datasets / "videos" / "short_hamilton_clip.mp4"
    # as the engine was before contested tracks (settled at 0.7, nothing contested)
    before = evaluate_tracking(video, None, progress=False, tracker=TrackerConfig(
        switch_confidence=None, settle_confidence=0.7, contest_changes=0))
    now = evaluate_tracking(video, None, progress=False, tracker=TrackerConfig(
        settle_confidence=0.7, contest_changes=0))  # switch_confidence 0.5, hold_frames 2
    assert now["agreement"] > before["agreement"]  # measured 97.3% against 96.6%
    assert now["agreement_confident"] >= before["agreement_confident"]  # 99.5% against 98.8%
    assert now["flickers_shown"] == 0
