"""Experiment: give the gallery the student's templates beside SFace's.

Runs the recognition evaluation's extraction once (LFW identities, k = 2, the same
probes and masks as ``maskwatch evaluate --task recognition``) and prints, for the
held-out (``masked``) and training (``masked_seen``) mask families, the figures of:
the engine's way (SFace templates, masked probes by the student), a gallery holding
both embedders' plain templates (a masked probe's score for a person is its best
over both), and templates that are the normalised mean of the two embeddings.

    python benchmarks/recognition_template_union.py [STUDENT.onnx]
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from maskwatch.evaluate import recognition as R
from maskwatch.ops.image import list_images
from maskwatch.ops.synthmask import MaskTemplates

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
STUDENT = Path(__file__).resolve().parents[1] / "src/maskwatch/weights/sface_masked_student.onnx"


def figures(data: R._Data, label: str) -> None:
    f = R._figures(data, ["plain"], seed=0, probe_face_px=48, open_set=True,
                   calibration_people=0.5, calibration_fpir=0.005)
    row = [label]
    for name in ("unmasked", "masked", "masked_seen"):
        c = f["closed_set"][name]["plain"]
        row.append(f"{name}: rank-1 {c['rank1']:.2%} TAR@1e-3 {c['tar']['1e-3']['tar']:.2%}")
    for name in ("masked", "masked_seen"):
        p = f["open_set"][name]["plain"]["pooled"]
        row.append(f"open {name}: known {p['known_correct']:.1%} unknown {p['unknown_named']:.2%}")
    print(" | ".join(row))


def main() -> None:
    student = sys.argv[1] if len(sys.argv) > 1 else str(STUDENT)
    people = [p for p in R.person_folders(DATA / "lfw-identities/images")
              if len(list_images(p)) > 2]
    data = R._extract(people, k=2, synthetic_masks=4, seed=0, probe_face_px=48,
                      templates=MaskTemplates.from_folder(DATA / "mask-templates"),
                      progress=False, student=student)
    engine = R.configuration_data(data, "student_masked")
    figures(engine, "engine (SFace templates)")
    both = replace(engine, t_emb=np.vstack([data.t_emb, data.student.t_emb]),
                   t_person=np.concatenate([data.t_person] * 2),
                   t_masked=np.concatenate([data.t_masked] * 2))
    figures(both, "SFace and student templates")
    mean = data.t_emb + data.student.t_emb
    figures(replace(engine, t_emb=mean / np.linalg.norm(mean, axis=1, keepdims=True)),
            "mean of the two templates")


if __name__ == "__main__":
    main()
