"""Does a small learned adapter on SFace embeddings help masked recognition of unseen people? (issue 4)

Experiment, not product code: it decides whether an adapter is worth integrating.
Embeddings come from the recognition evaluation itself
(:func:`maskwatch.evaluate.recognition._extract`: same enrolment, probes, masks and
seeds as ``maskwatch evaluate --task recognition``), extracted once and cached as a
pickle. The people are then split into folds by identity (seeded shuffle); for each
fold an adapter is fitted on the *other* folds' people only and the fold is scored
alone (gallery = that fold's people), with the evaluation's own closed-set and
open-set code (``_closed_set``, ``_open_set``: ``_calibrate``, ``open_set_rates``).
Results are pooled over folds and compared with the baseline on exactly the same
folds (so baseline figures differ from the 106-people report: smaller galleries).

Adapters (all outputs L2-normalised, 128-d):

- ``ridge_masked``: linear map W (128x128) fitted in closed form by ridge regression
  towards the identity, ``min ||X W - Y||^2 + lam ||W - I||^2``, X = embedding of a
  photo wearing a synthetic mask, Y = embedding of the same photo plain. Applied to
  masked embeddings only (masked templates and masked probes); plain ones unchanged.
  So scheme ``plain`` = mapped masked probes vs plain templates, ``mask_aware`` =
  mapped masked probes vs mapped masked templates.
- ``ridge_both``: the same W applied to every embedding (plain ones too).
- ``mlp_masked`` (needs torch, the ``[train]`` extra): x -> normalise(x + MLP(x)), one
  hidden layer of 256, trained on the same pairs with a cosine loss to the plain
  embedding plus an InfoNCE term (positives: plain embeddings of the same person),
  applied to masked embeddings only.

``lam`` of the ridge map is chosen per outer fold by an inner identity split of the
training people (criterion: masked TAR at FAR 1e-3, ``mask_aware``), never on the
fold it is scored on; the whole grid is also reported for reference.

    python benchmarks/adapter_experiment.py [--datasets ../shared/datasets]
        [--cache /tmp/maskwatch-adapter-data.pkl] [--folds 2] [--splits 5] [--no-mlp] [--out runs/adapter]

Extraction takes several minutes on 2 cores (once; the cache is reused); the
adapters and scoring take well under a minute (MLP: about a minute per fold).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.evaluate.recognition import SCHEMES, _closed_set, _Data, _open_set

log = logging.getLogger("adapter_experiment")

LAMBDAS: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
SETS: tuple[str, ...] = ("unmasked", "masked")

Adapter = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- data


def load_or_extract(cache: Path, datasets: Path, seed: int) -> _Data:
    """The evaluation's embeddings (106 LFW people, k=2, 4 synthetic masks, MaskTheFace probes)."""
    if cache.exists():
        with cache.open("rb") as f:
            return pickle.load(f)
    from maskwatch.evaluate.recognition import _extract, person_folders
    from maskwatch.ops.image import list_images
    from maskwatch.ops.synthmask import MaskTemplates

    people = [p for p in person_folders(datasets / "lfw-identities") if len(list_images(p)) > 2]
    t = time.perf_counter()
    data = _extract(people, k=2, synthetic_masks=4, seed=seed, probe_face_px=None,
                    templates=MaskTemplates.from_folder(datasets / "mask-templates"), progress=True)
    log.info("extracted %d people in %.0f s", len(people), time.perf_counter() - t)
    with cache.open("wb") as f:
        pickle.dump(data, f)
    return data


def subset(data: _Data, people: np.ndarray) -> _Data:
    """The run restricted to ``people`` (indices), re-indexed 0..len-1."""
    people = np.sort(people)
    new = np.full(len(data.people), -1, np.int64)
    new[people] = np.arange(len(people))
    tk = np.isin(data.t_person, people)
    pk = np.isin(data.p_person, people)
    return dataclasses.replace(
        data,
        people=[data.people[i] for i in people],
        t_emb=data.t_emb[tk], t_person=new[data.t_person[tk]], t_masked=data.t_masked[tk],
        enrol_photos=data.enrol_photos[people],
        p_person=new[data.p_person[pk]],
        p_source=[s for s, k in zip(data.p_source, pk, strict=True) if k],
        p_mask_shape=[s for s, k in zip(data.p_mask_shape, pk, strict=True) if k],
        sets={n: {"emb": s["emb"][pk], "ok": s["ok"][pk]} for n, s in data.sets.items()},
        face_px={},
    )


def pairs(data: _Data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(masked X, plain Y, person) training pairs of one photo with and without a synthetic mask.

    From enrolment (each plain template is followed by its photo's masked templates)
    and from the probes (masked and unmasked versions of the same photo, both detected).
    """
    xs, ys, ps = [], [], []
    plain = -1
    for i in range(len(data.t_emb)):
        if not data.t_masked[i]:
            plain = i
        elif plain >= 0 and data.t_person[plain] == data.t_person[i]:
            xs.append(data.t_emb[i])
            ys.append(data.t_emb[plain])
            ps.append(data.t_person[i])
    u, m = data.sets["unmasked"], data.sets["masked"]
    both = u["ok"] & m["ok"]
    x = np.concatenate([np.array(xs, np.float32).reshape(-1, data.t_emb.shape[1]), m["emb"][both]])
    y = np.concatenate([np.array(ys, np.float32).reshape(-1, data.t_emb.shape[1]), u["emb"][both]])
    p = np.concatenate([np.array(ps, np.int64), data.p_person[both]])
    return x, y, p


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def adapted(data: _Data, fn: Adapter, plain_too: bool) -> _Data:
    """``data`` with ``fn`` applied to the masked embeddings (and to the plain ones if ``plain_too``)."""
    t = data.t_emb.copy()
    sel = np.ones(len(t), bool) if plain_too else data.t_masked
    t[sel] = fn(t[sel])
    sets = {}
    for name, s in data.sets.items():
        emb = s["emb"].copy()
        if plain_too or name.startswith("masked"):
            emb[s["ok"]] = fn(emb[s["ok"]])
        sets[name] = {"emb": emb, "ok": s["ok"]}
    return dataclasses.replace(data, t_emb=t, sets=sets)


# --------------------------------------------------------------------------- adapters


def fit_ridge(x: np.ndarray, y: np.ndarray, lam: float) -> Adapter:
    """Closed-form ridge map towards the identity: W = (X'X + lam I)^-1 (X'Y + lam I)."""
    d = x.shape[1]
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    w = np.linalg.solve(x64.T @ x64 + lam * np.eye(d), x64.T @ y64 + lam * np.eye(d))
    return lambda e: _unit(e.astype(np.float64) @ w)


def fit_mlp(x: np.ndarray, y: np.ndarray, person: np.ndarray, *, seed: int, epochs: int = 300,
            hidden: int = 256, temperature: float = 0.1, weight_decay: float = 1e-4) -> Adapter:
    """Tiny residual MLP, cosine-to-plain + InfoNCE (same-person plain embeddings positive)."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    d = x.shape[1]
    net = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, d))
    torch.nn.init.zeros_(net[2].weight)
    torch.nn.init.zeros_(net[2].bias)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=weight_decay)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    pt = torch.from_numpy(person)
    same = (pt[:, None] == pt[None, :]).float()
    rng = np.random.default_rng(seed)
    batch = 256
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        for b in range(0, len(x), batch):
            idx = order[b:b + batch]
            out = torch.nn.functional.normalize(xt[idx] + net(xt[idx]), dim=1)
            cos = (out * yt[idx]).sum(1)
            logits = out @ yt[idx].T / temperature
            pos = same[idx][:, idx]
            nce = -(torch.logsumexp(logits.masked_fill(pos == 0, -1e9), 1) - torch.logsumexp(logits, 1))
            loss = (1 - cos).mean() + 0.1 * nce.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()

    def apply(e: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.from_numpy(e.astype(np.float32))
            return torch.nn.functional.normalize(t + net(t), dim=1).numpy()

    return apply


# --------------------------------------------------------------------------- scoring


def score_fold(data: _Data, seed: int) -> dict[str, Any]:
    """Closed-set and open-set figures of one fold (its own people only), every scheme."""
    out: dict[str, Any] = {}
    for name in SETS:
        out[name] = {}
        for sch in SCHEMES:
            cs = _closed_set(data, name, sch)
            os_ = _open_set(data, name, sch, seed=seed, calibration_people=0.5, calibration_fpir=0.005)
            out[name][sch] = {"closed": cs, "open": os_}
    return out


def pool(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool fold results: counts summed (rank-1, TAR at the fold's own FAR threshold, open-set rates)."""
    res: dict[str, Any] = {}
    for name in SETS:
        res[name] = {}
        for sch in SCHEMES:
            n = [f[name][sch]["closed"]["probes"] for f in folds]
            tot = sum(n)
            r: dict[str, Any] = {"probes": tot,
                                 "rank1": sum(f[name][sch]["closed"]["rank1"] * k for f, k in zip(folds, n, strict=True)) / tot}
            for key in ("1e-3", "1e-2"):
                r[f"tar_{key}"] = sum(f[name][sch]["closed"]["tar"][key]["tar"] * k for f, k in zip(folds, n, strict=True)) / tot
            unk = kn = named_unk = right = wrong = 0.0
            for f in folds:
                for fold in f[name][sch]["open"]["folds"]:
                    unk += fold["n_unknown"]
                    named_unk += fold["unknown_named"] * fold["n_unknown"]
                    kn += fold["n_known"]
                    right += fold["known_correct"] * fold["n_known"]
                    wrong += fold["known_wrong"] * fold["n_known"]
            r["open_unknown_named"] = named_unk / unk
            r["open_known_correct"] = right / kn
            r["open_known_wrong"] = wrong / kn
            res[name][sch] = r
    return res


def folds_of(n_people: int, n_folds: int, seed: int) -> list[np.ndarray]:
    perm = np.random.default_rng([seed, 4]).permutation(n_people)
    return [np.sort(perm[i::n_folds]) for i in range(n_folds)]


def choose_lambda(data: _Data, train: np.ndarray, seed: int) -> tuple[float, dict[str, float]]:
    """Ridge lam by an inner identity split of the training people (both halves, pooled)."""
    inner = folds_of(len(train), 2, seed + 1)
    crit = {}
    for lam in LAMBDAS:
        vals = []
        for a, b in ((0, 1), (1, 0)):
            fit = fit_ridge(*pairs(subset(data, train[inner[a]]))[:2], lam)
            held = adapted(subset(data, train[inner[b]]), fit, plain_too=False)
            vals.append(_closed_set(held, "masked", "mask_aware")["tar"]["1e-3"]["tar"])
        crit[str(lam)] = float(np.mean(vals))
    best = max(LAMBDAS, key=lambda lam: crit[str(lam)])
    return best, crit


def run(data: _Data, *, n_folds: int, seed: int, mlp: bool, mlp_epochs: int = 300) -> dict[str, Any]:
    folds = folds_of(len(data.people), n_folds, seed)
    per: dict[str, list[dict[str, Any]]] = {}
    info: list[dict[str, Any]] = []

    def add(label: str, fold_res: dict[str, Any]) -> None:
        per.setdefault(label, []).append(fold_res)

    for i, test in enumerate(folds):
        train = np.sort(np.concatenate([f for j, f in enumerate(folds) if j != i]))
        tr = subset(data, train)
        te = subset(data, test)
        x, y, p = pairs(tr)
        lam, crit = choose_lambda(data, train, seed)
        cos_before = float(np.mean(np.sum(x * y, 1)))
        info.append({"fold": i, "test_people": len(test), "train_people": len(train), "train_pairs": len(x),
                     "lambda": lam, "inner_masked_tar_1e-3": crit, "train_cos_masked_plain": cos_before})
        log.info("fold %d: %d test people, %d train people, %d pairs, lambda %s", i, len(test), len(train),
                 len(x), lam)
        add("baseline", score_fold(te, seed))
        w = fit_ridge(x, y, lam)
        add("ridge_masked", score_fold(adapted(te, w, plain_too=False), seed))
        add("ridge_both", score_fold(adapted(te, w, plain_too=True), seed))
        for g in LAMBDAS:
            add(f"ridge_masked_lam{g:g}", score_fold(adapted(te, fit_ridge(x, y, g), plain_too=False), seed))
        if mlp:
            t = time.perf_counter()
            net = fit_mlp(x, y, p, seed=seed, epochs=mlp_epochs)
            info[-1]["mlp_train_s"] = round(time.perf_counter() - t, 1)
            add("mlp_masked", score_fold(adapted(te, net, plain_too=False), seed))
    return {"folds": info, "pooled": {k: pool(v) for k, v in per.items()}}


HEADLINE: tuple[tuple[str, str], ...] = (
    ("masked", "plain"), ("masked", "mask_aware"), ("masked", "mask_aware_fused"), ("masked", "plain_tnorm"),
    ("masked", "mask_aware_tnorm"), ("unmasked", "plain"), ("unmasked", "plain_tnorm"),
)
METRICS: tuple[tuple[str, str], ...] = (
    ("rank1", "rank-1"), ("tar_1e-3", "TAR @ FAR 1e-3"), ("tar_1e-2", "TAR @ FAR 1e-2"),
    ("open_unknown_named", "open: unknown named"), ("open_known_correct", "open: known named right"),
)


def summary(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over repeats of each pooled figure, and of its difference to the baseline (min, max)."""
    out: dict[str, Any] = {}
    for label in repeats[0]["pooled"]:
        out[label] = {}
        for name, sch in HEADLINE:
            row = {}
            for key, _ in METRICS:
                v = np.array([r["pooled"][label][name][sch][key] for r in repeats])
                b = np.array([r["pooled"]["baseline"][name][sch][key] for r in repeats])
                row[key] = {"mean": float(v.mean()), "delta_mean": float((v - b).mean()),
                            "delta_min": float((v - b).min()), "delta_max": float((v - b).max())}
            out[label][f"{name}/{sch}"] = row
    return out


def format_md(res: dict[str, Any]) -> str:
    def p(v: float) -> str:
        return f"{100 * v:.2f}"

    lines = [f"{res['people']} people, {res['n_folds']} folds by identity, {len(res['repeats'])} fold splits "
             f"(seeds {res['split_seeds']}). Mean over splits of the pooled figure (%), and in brackets its "
             "difference to the baseline on the same folds: mean [min, max] in points.", ""]
    for name, sch in HEADLINE:
        lines += [f"### `{name}` probes, scheme `{sch}`", "",
                  "| adapter | " + " | ".join(m for _, m in METRICS) + " |", "|---" + "|---:" * len(METRICS) + "|"]
        for label, rows in res["summary"].items():
            r = rows[f"{name}/{sch}"]
            cells = []
            for key, _ in METRICS:
                c = r[key]
                cells.append(p(c["mean"]) if label == "baseline" else
                             f"{p(c['mean'])} ({100 * c['delta_mean']:+.2f} [{100 * c['delta_min']:+.2f}, "
                             f"{100 * c['delta_max']:+.2f}])")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lams = [(r["seed"], f["fold"], f["lambda"]) for r in res["repeats"] for f in r["folds"]]
    lines.append("Ridge lambda chosen per outer fold (split seed, fold, lambda): "
                 + ", ".join(f"({a}, {b}, {c:g})" for a, b, c in lams) + ".")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/maskwatch-adapter-data.pkl"))
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="seed of the evaluation's masks (extraction)")
    ap.add_argument("--splits", type=int, default=5, help="fold splits to repeat, seeds 0..splits-1")
    ap.add_argument("--no-mlp", action="store_true", help="skip the torch MLP adapter")
    ap.add_argument("--mlp-epochs", type=int, default=300, help="MLP passes over the training pairs")
    ap.add_argument("--out", type=Path, default=Path("runs/adapter"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t = time.perf_counter()
    data = load_or_extract(args.cache, args.datasets, args.seed)
    repeats = []
    for split in range(args.splits):
        r = run(data, n_folds=args.folds, seed=split, mlp=not args.no_mlp, mlp_epochs=args.mlp_epochs)
        r["seed"] = split
        repeats.append(r)
    res = {"people": len(data.people), "n_folds": args.folds, "mlp_epochs": None if args.no_mlp else args.mlp_epochs, "split_seeds": list(range(args.splits)),
           "repeats": repeats, "summary": summary(repeats), "seconds": round(time.perf_counter() - t, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "adapter.json").write_text(json.dumps(res, indent=2, default=float))
    (args.out / "adapter.md").write_text(format_md(res))
    print(format_md(res))
    log.info("%.1f s", res["seconds"])


if __name__ == "__main__":
    main()
