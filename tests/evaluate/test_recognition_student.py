"""The recognition evaluation with a student embedder beside SFace, and its probe masks.

The student here is SFace itself written as a student file (its float32 graph with
student metadata), so every configuration must give SFace's figures exactly; a control
with the student's masked embeddings taken from other crops shows that the comparison
can fail.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from maskwatch.cli import main
from maskwatch.evaluate import recognition as rec
from maskwatch.ops.synthmask import (
    HELD_OUT_SHAPES,
    HELD_OUT_TEMPLATE_FAMILIES,
    MASK_SHAPES,
    MaskTemplates,
)

onnx = pytest.importorskip("onnx", reason="student files are read with the onnx package")

PEOPLE = 6
HELD_OUT = set(HELD_OUT_SHAPES) | {f"template:{f}" for f in HELD_OUT_TEMPLATE_FAMILIES}
OPTS = {
    "seed": 0,
    "probe_face_px": 48,
    "open_set": True,
    "calibration_people": 0.5,
    "calibration_fpir": 0.005,
}


def _student_file(path: Path) -> Path:
    from maskwatch.models.embedder import (
        META_NAME,
        META_SPACE,
        META_VERSION,
        sface_fp32_model,
        sface_model_path,
    )

    model = onnx.load_from_string(sface_fp32_model(sface_model_path()))
    for key, value in (
        (META_NAME, "sface-masked-student"),
        (META_VERSION, "1"),
        (META_SPACE, "sface-2021dec-int8"),
    ):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def student_path(tmp_path_factory) -> Path:
    return _student_file(tmp_path_factory.mktemp("student") / "student-sface.onnx")


@pytest.fixture(scope="module")
def run(datasets, student_path):
    """(data, results) of SFace and the SFace-weights student on the first people of LFW."""
    from maskwatch.evaluate.recognition import person_folders

    people = person_folders(datasets / "lfw-identities")[:PEOPLE]
    data = rec._extract(
        people,
        k=2,
        synthetic_masks=4,
        seed=0,
        probe_face_px=48,
        progress=False,
        templates=MaskTemplates.from_folder(datasets / "mask-templates"),
        student=student_path,
    )
    results = rec.summarise(data, k=2, synthetic_masks=4, **OPTS)
    return data, results


def _figures(cfg: dict) -> dict[str, float]:
    """The figures of one configuration that depend on embeddings (thresholds included)."""
    out = {}
    for name, per in cfg["closed_set"].items():
        for sch, r in per.items():
            out[f"{name}/{sch}/rank1"] = r["rank1"]
            for far, t in r["tar"].items():
                out[f"{name}/{sch}/tar{far}"] = t["tar"]
                out[f"{name}/{sch}/threshold{far}"] = t["threshold"]
    for name, per in cfg["open_set"].items():
        for sch, r in per.items():
            out[f"{name}/{sch}/unknown_named"] = r["pooled"]["unknown_named"]
            out[f"{name}/{sch}/known_correct"] = r["pooled"]["known_correct"]
            out[f"{name}/{sch}/threshold"] = r["recommended"]["threshold"]
            for i, fold in enumerate(r["folds"]):
                out[f"{name}/{sch}/fold{i}_threshold"] = fold["threshold"]
    return out


def test_a_student_with_sfaces_weights_gives_sfaces_figures_everywhere(run):
    data, res = run
    assert res["student"]["name"] == "sface-masked-student"
    assert set(res["configurations"]) == {"sface", "student_masked", "student"}
    # the student embedded exactly the crops SFace embedded: templates and every probe set
    np.testing.assert_allclose(data.student.t_emb, data.t_emb, atol=1e-6)
    for name, s in data.sets.items():
        assert s["ok"].sum() > 0.9 * len(s["ok"])
        np.testing.assert_allclose(data.student.sets[name], s["emb"], atol=1e-6)
    sface = _figures(res["configurations"]["sface"])
    assert len(sface) > 40 and len(res["configurations"]["sface"]["open_set"]) == 5
    for cfg in ("student_masked", "student"):
        assert _figures(res["configurations"][cfg]) == pytest.approx(sface, abs=1e-6), cfg
    # the sface configuration is the SFace-alone report's plain and mask_aware columns
    for name in data.sets:
        for sch in rec.CONFIGURATION_SCHEMES:
            assert (
                res["configurations"]["sface"]["closed_set"][name][sch]
                == res["closed_set"][name][sch]
            )


def test_the_comparison_fails_when_the_student_embeds_other_crops(run):
    """Control: the student's masked probes taken from the training-mask photos (other
    crops of the same faces) change student_masked's figures but not the unmasked ones."""
    data, _ = run
    other = replace(
        data.student, sets={**data.student.sets, "masked": data.student.sets["masked_seen"]}
    )
    bad = rec.configuration_data(replace(data, student=other), "student_masked")
    good = rec.configuration_data(data, "student_masked")
    assert rec._closed_set(bad, "unmasked", "plain") == rec._closed_set(good, "unmasked", "plain")
    bad_masked = _figures(
        {
            "closed_set": {"masked": {"plain": rec._closed_set(bad, "masked", "plain")}},
            "open_set": {},
        }
    )
    good_masked = _figures(
        {
            "closed_set": {"masked": {"plain": rec._closed_set(good, "masked", "plain")}},
            "open_set": {},
        }
    )
    assert bad_masked != pytest.approx(good_masked, abs=1e-6)


def test_held_out_probe_masks_never_use_a_training_family(run):
    data, res = run
    n = len(data.p_person)
    held, seen = data.p_mask_family["masked"], data.p_mask_family["masked_seen"]
    assert len(held) == len(seen) == n == PEOPLE * 8
    assert set(held) == HELD_OUT  # procedural N95 and the KN95 template, nothing else
    assert not set(seen) & HELD_OUT
    procedural = {f for f in seen if not f.startswith("template:")}
    assert procedural <= set(MASK_SHAPES) - set(HELD_OUT_SHAPES)
    assert any(f.startswith("template:") for f in seen)
    assert res["mask_families"]["masked"] == {f: held.count(f) for f in sorted(set(held))}
    # the small masked faces are the held-out photos shrunk: by-mask rows name held-out families
    assert set(res["closed_set"]["masked_48px"]["mask_aware"]["by_mask"]) <= HELD_OUT
    assert not set(res["closed_set"]["masked_seen"]["mask_aware"]["by_mask"]) & HELD_OUT


def test_without_templates_the_held_out_masks_are_procedural_n95(datasets):
    from maskwatch.evaluate.recognition import person_folders

    people = person_folders(datasets / "lfw-identities")[:2]
    data = rec._extract(
        people, k=2, synthetic_masks=1, seed=3, probe_face_px=None, progress=False, templates=None
    )
    assert set(data.p_mask_family["masked"]) == set(HELD_OUT_SHAPES)
    assert (
        data.p_mask_family["masked_seen"] and not set(data.p_mask_family["masked_seen"]) & HELD_OUT
    )
    assert set(data.sets) == {"unmasked", "masked", "masked_seen"} and data.student is None


def test_timing_names_each_embedder(run):
    _, res = run
    ms = res["timing_ms"]["embed_only_median"]
    assert set(ms) == {"sface", "student"} and all(0 < v < 1000 for v in ms.values())


def test_the_report_opens_with_the_side_by_side_table(run):
    _, res = run
    md = rec.format_recognition(res)
    side = md.index("## Side by side")
    assert side < md.index("## Probe masks") < md.index("## Targets")
    table = md[side : md.index("## Probe masks")]
    assert "| figure | target | sface plain | sface mask_aware | student_masked plain" in table
    for row in (
        "masked (held-out) rank-1 | >= 99.0%",
        "masked (held-out) TAR @ FAR 1e-3 | >= 97.0%",
        "unmasked rank-1 | >= 99.5%",
        "open set: known masked probes named right | >= 95.0%",
        "open set: unknown masked probes named | <= 1.0%",
        "masked_seen (training families) rank-1",
    ):
        assert row in table
    lines = rec.summary_lines(res)
    assert any(line.startswith("masked rank-1") and "student_masked" in line for line in lines)
    json.dumps(rec.json_safe(res))


def test_configuration_data_takes_each_part_from_its_embedder():
    rng = np.random.default_rng(1)

    def unit(n):
        x = rng.normal(size=(n, 8))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    ok = np.ones(5, bool)
    sets = {
        name: {"emb": unit(5), "ok": ok}
        for name in ("unmasked", "masked", "masked_seen", "masked_48px")
    }
    stu = rec._StudentEmbeddings(t_emb=unit(6), sets={name: unit(5) for name in sets}, embedder={})
    data = rec._Data(
        people=["a", "b", "c"],
        t_emb=unit(6),
        t_person=np.repeat(np.arange(3), 2),
        t_masked=np.tile([False, True], 3),
        enrol_photos=np.ones(3, np.int64),
        enrol_failures=[],
        p_person=np.arange(5) % 3,
        p_source=[""] * 5,
        sets=sets,
        student=stu,
    )
    mixed = rec.configuration_data(data, "student_masked")
    assert mixed.t_emb is data.t_emb and mixed.sets["unmasked"]["emb"] is sets["unmasked"]["emb"]
    for name in ("masked", "masked_seen", "masked_48px"):
        assert mixed.sets[name]["emb"] is stu.sets[name]
    alone = rec.configuration_data(data, "student")
    assert alone.t_emb is stu.t_emb and all(alone.sets[n]["emb"] is stu.sets[n] for n in sets)
    assert rec.configuration_data(data, "sface").sets["masked"]["emb"] is sets["masked"]["emb"]
    with pytest.raises(ValueError, match="needs the student"):
        rec.configuration_data(replace(data, student=None), "student")


def test_cli_missing_student_file_is_one_clear_error_line(tmp_path, capsys):
    (tmp_path / "ann").mkdir()
    code = main(
        [
            "evaluate",
            "--task",
            "recognition",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
            "--embedder",
            str(tmp_path / "missing.onnx"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        f"maskwatch evaluate: error: embedder file not found: {tmp_path / 'missing.onnx'}"
    ]


def test_cli_unknown_embedder_and_a_student_of_another_space(tmp_path, capsys):
    from maskwatch.models.embedder import META_NAME, META_SPACE, sface_fp32_model, sface_model_path

    assert (
        main(
            [
                "evaluate",
                "--task",
                "recognition",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
                "--embedder",
                "arcface",
            ]
        )
        == 2
    )
    assert "choose sface, dlib or an .onnx file" in capsys.readouterr().err
    model = onnx.load_from_string(sface_fp32_model(sface_model_path()))
    for key, value in ((META_NAME, "other-student"), (META_SPACE, "arcface-r100")):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(tmp_path / "other.onnx"))
    assert (
        main(
            [
                "evaluate",
                "--task",
                "recognition",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
                "--embedder",
                str(tmp_path / "other.onnx"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "comparable with 'arcface-r100' templates" in err[0]


def test_cli_runs_sface_and_the_student_side_by_side(datasets, tmp_path, student_path, capsys):
    out = tmp_path / "rec"
    code = main(
        [
            "evaluate",
            "--task",
            "recognition",
            str(datasets / "lfw-identities"),
            "--out",
            str(out),
            "--embedder",
            str(student_path),
            "--max-per-source",
            "4",
            "--probe-face-px",
            "0",
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    res = json.loads((out / "recognition.json").read_text())
    assert res["embedder"]["name"] == "sface-2021dec-int8" and res["student"]["path"] == str(
        student_path
    )
    cfgs = res["configurations"]
    assert set(cfgs) == {"sface", "student_masked", "student"}
    assert cfgs["student_masked"]["embedders"] == {
        "templates": "sface",
        "unmasked": "sface",
        "masked": "student",
    }
    assert set(cfgs["student"]["closed_set"]["masked"]) == set(rec.CONFIGURATION_SCHEMES)
    assert "masked rank-1 (target >= 99.0%): sface" in printed and "ms per face" in printed
    assert (out / "recognition.md").read_text().index("## Side by side") < 2000
