"""When the pipeline runs each stage, with simple stand-in stages.

The stages here are plain functions of the frame number (a detector that reports a
scripted box, a classifier that reports fixed probabilities, an embedder and matcher
that answer from a script) so that the tables below say exactly on which frames
the pipeline classifies and identifies. The real models are tested elsewhere
(tests/test_pipeline.py and the evaluations).
"""

from __future__ import annotations

import numpy as np
import pytest

from maskwatch.ops.quality import QualityRule
from maskwatch.pipeline import Pipeline, PipelineConfig
from maskwatch.types import MASK_CLASSES, Faces

FRAME = np.zeros((240, 320, 3), np.uint8)
#: The quality rule is off here: the frame is black and the stand-in classifier cuts no
#: crops (tests/test_pipeline.py tests the rule on real faces).
NO_RULE = QualityRule()


class ScriptedDetector:
    """One face at a fixed place on every frame whose number is in ``present``, and a
    second one beside it on every frame in ``second``."""

    def __init__(self, present: set[int], second: frozenset[int] = frozenset()) -> None:
        self.present = present
        self.second = second
        self.frame = -1

    def detect(self, image: np.ndarray) -> Faces:
        self.frame += 1
        boxes = [[100, 60, 180, 160]] if self.frame in self.present else []
        if self.frame in self.second:
            boxes.append([200, 60, 280, 160])
        return Faces(boxes=np.array(boxes, np.float32).reshape(-1, 4), scores=[0.95] * len(boxes))


class FixedClassifier:
    """Every face ``label`` with probability 0.95; counts its calls."""

    def __init__(self, label: str = "without_mask") -> None:
        self.probs = np.full(len(MASK_CLASSES), 0.05 / (len(MASK_CLASSES) - 1), np.float32)
        self.probs[MASK_CLASSES.index(label)] = 0.95
        self.calls = 0

    def classify(self, image: np.ndarray, faces: Faces) -> Faces:
        self.calls += 1
        return faces.with_fields(mask_probs=np.tile(self.probs, (len(faces), 1)))


class CountingEmbedder:
    """A constant embedding per face; counts its calls."""

    name, version = "stand-in", "1"

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        self.calls += 1
        return np.ones((len(faces), 4), np.float32)


class ScriptedMatcher:
    """Answers from ``answers`` in turn (the last one repeats); records the frames it was
    asked on."""

    def __init__(self, answers: list[str | None], clock: ScriptedDetector) -> None:
        self.answers = answers
        self.clock = clock
        self.asked: list[int] = []

    def identify(self, embeddings: np.ndarray,
                 masked: np.ndarray) -> list[tuple[str | None, float]]:
        self.asked.append(self.clock.frame)
        name = self.answers[min(len(self.asked), len(self.answers)) - 1]
        return [(name, 0.8 if name else 0.1)] * len(embeddings)


def run(frames: int, answers: list[str | None],
        **config: object) -> tuple[ScriptedMatcher, list[Faces], list]:
    detector = ScriptedDetector(set(range(frames)))
    matcher = ScriptedMatcher(answers, detector)
    pipe = Pipeline(PipelineConfig(quality=NO_RULE, detect_every=1, **config), detector=detector,  # type: ignore[arg-type]
                    classifier=FixedClassifier(), embedder=CountingEmbedder(), matcher=matcher)
    results = [pipe.process(FRAME, timestamp=k / 30) for k in range(frames)]
    return matcher, [r.faces for r in results], results


@pytest.mark.parametrize(
    ("answers", "asked"),
    [
        # named at once: looked up again every IDENTIFY_EVERY (30) frames
        (["Ann"], [0, 30, 60]),
        # unknown: looked up every IDENTIFY_UNKNOWN_EVERY (10) frames until named
        ([None], [0, 10, 20, 30, 40, 50, 60, 70, 80]),
        # named at the third look: from then on every 30 frames
        ([None, None, "Ann"], [0, 10, 20, 50, 80]),
    ],
)
def test_identity_look_ups(answers, asked):
    matcher, _, results = run(90, answers)
    assert matcher.asked == asked
    if "Ann" in answers:
        assert results[-1].faces.names.tolist() == ["Ann"]


@pytest.mark.parametrize(
    ("present", "asked"),
    [
        # away 3 frames (within max_missed, 15): the same track keeps its name
        (set(range(10)) | set(range(13, 40)), [0, 30]),
        # away 18 frames: the track ended, the face comes back as a new one, looked up at once
        (set(range(10)) | set(range(28, 40)), [0, 28]),
    ],
)
def test_a_face_back_within_max_missed_keeps_its_look_up_schedule(present, asked):
    detector = ScriptedDetector(present)
    matcher = ScriptedMatcher(["Ann"], detector)
    pipe = Pipeline(PipelineConfig(quality=NO_RULE, detect_every=1), detector=detector,
                    classifier=FixedClassifier(), embedder=CountingEmbedder(), matcher=matcher)
    for k in range(40):
        pipe.process(FRAME, timestamp=k / 30)
    assert matcher.asked == asked


def test_each_track_is_looked_up_on_its_own_schedule():
    # a second face joins at frame 5: looked up at once, then every 30 frames from there
    detector = ScriptedDetector(set(range(70)), second=frozenset(range(5, 70)))
    matcher = ScriptedMatcher(["Ann"], detector)
    pipe = Pipeline(PipelineConfig(quality=NO_RULE, detect_every=1), detector=detector,
                    classifier=FixedClassifier(), embedder=CountingEmbedder(), matcher=matcher)
    results = [pipe.process(FRAME, timestamp=k / 30) for k in range(70)]
    assert matcher.asked == [0, 5, 30, 35, 60, 65]
    assert (results[-1].faces.names.tolist() == ["Ann", "Ann"]
            and results[-1].faces.track_ids.tolist() == [1, 2])


def test_an_unknown_answer_never_erases_a_name():
    matcher, _, results = run(40, ["Ann", None])
    assert matcher.asked == [0, 30]
    assert [r.faces.names[0] for r in results] == ["Ann"] * 40


def test_forgetting_identities_looks_every_track_up_on_the_next_frame():
    detector = ScriptedDetector(set(range(20)))
    matcher = ScriptedMatcher(["Ann"], detector)
    pipe = Pipeline(PipelineConfig(quality=NO_RULE, detect_every=1), detector=detector,
                    classifier=FixedClassifier(), embedder=CountingEmbedder(), matcher=matcher)
    for k in range(20):
        if k == 7:
            pipe.forget_identities()
        pipe.process(FRAME, timestamp=k / 30)
    assert matcher.asked == [0, 7]


@pytest.mark.parametrize(
    ("every", "classified"),
    # a new track is classified on settle_looks (3) frames in a row while its label
    # settles (confident looks), then every classify_every frames
    [(10, [0, 1, 2, 12, 22]), (5, [0, 1, 2, 7, 12, 17, 22, 27])],
)
def test_mask_classification_every(every, classified):
    detector = ScriptedDetector(set(range(30)))
    clf = FixedClassifier()
    pipe = Pipeline(PipelineConfig(quality=NO_RULE, detect_every=1, classify_every=every,
                                   reclassify_change=0), detector=detector, classifier=clf)
    frames = []
    for k in range(30):
        before = clf.calls
        pipe.process(FRAME, timestamp=k / 30)
        if clf.calls > before:
            frames.append(k)
    assert frames == classified


def test_photo_mode_runs_every_stage_on_every_frame():
    detector = ScriptedDetector(set(range(5)))
    matcher = ScriptedMatcher(["Ann"], detector)
    clf = FixedClassifier("with_mask")
    pipe = Pipeline(PipelineConfig.accurate(quality=NO_RULE), detector=detector, classifier=clf,
                    embedder=CountingEmbedder(), matcher=matcher)
    results = [pipe.process(FRAME) for _ in range(5)]
    assert matcher.asked == [0, 1, 2, 3, 4] and clf.calls == 5
    assert all(r.faces.mask_labels.tolist() == ["with_mask"] and r.faces.names.tolist() == ["Ann"]
               for r in results)
