"""Exact gallery search time over many templates (target: at most 5 ms per search).

Fills a gallery (a temporary SQLite file unless ``--db`` is given: use an empty
database, it is filled) with random unit 128-d templates, half of them masked, then
times, on the cached matcher: the median and p95 time of one search with 1 probe and
with 10 probes (and per probe), through ``Gallery.search`` (which also looks at the
store's change stamp at most once a second) and through the bare matcher.

    python benchmarks/bench_search.py [--templates 100000] [--per-person 10] [--runs 200]
                                      [--db URL] [--blas-threads 1]

On a CPU whose cores are busy (the engine's detector, or any other job), a
multi-threaded BLAS waits for a free core on every matrix product: one search then
takes a scheduler time slice (about 8 ms) instead of a fraction of a millisecond.
``--blas-threads 1`` shows the time with a single-threaded BLAS (the setting to run
the engine with on a small CPU: ``OPENBLAS_NUM_THREADS=1``).

``--approximate`` compares exact search with the approximate index that the matcher
uses past 100,000 templates (faiss, the ``[ann]`` extra) at each of ``--sizes``
templates held in memory (no store): build time, one-probe latency of both, and
recall@1 against exact search (the same template; the same person) for probes
scattered around the people's directions like real faces around their templates.

    python benchmarks/bench_search.py --approximate [--sizes 100000,500000,1000000]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from _timing import timeit

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("bench_search")
EMBEDDER, VERSION = "bench-random", "1"


def fill(gallery, n_templates: int, per_person: int, dim: int,
         rng: np.random.Generator) -> float:
    """Add ``n_templates`` random templates; returns the seconds it took."""
    import numpy as np

    from maskwatch.gallery import Template

    t0 = time.perf_counter()
    masked = np.arange(per_person) % 2 == 1
    for i in range(n_templates // per_person):
        emb = rng.normal(size=(per_person, dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        gallery.add_person(f"person {i:06d}", templates=[
            Template("", emb[j], EMBEDDER, VERSION, bool(masked[j]), bool(masked[j]))
            for j in range(per_person)])
        if i % 2000 == 1999:
            log.info("%d templates added", (i + 1) * per_person)
    return time.perf_counter() - t0


def clustered(n_templates: int, per_person: int, dim: int, n_probes: int,
              rng: np.random.Generator):
    """Random unit templates scattered around each person's random direction (cosine
    about 0.75 to it; two templates of one person about 0.55) and unseen probes drawn
    the same way: (names, templates, probes)."""
    import numpy as np

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    n_people = n_templates // per_person
    centres = unit(rng.normal(size=(n_people, dim)))
    templates = np.empty((n_people * per_person, dim), np.float32)
    # in chunks: a million noise vectors at once is 0.5 GB more
    for start in range(0, n_people, 10_000):
        c = centres[start:start + 10_000]
        noise = unit(rng.normal(size=(len(c) * per_person, dim)))
        templates[start * per_person:(start + len(c)) * per_person] = unit(
            np.repeat(c, per_person, 0) + 0.9 * noise)
    who = rng.integers(0, n_people, n_probes)
    probes = unit(centres[who] + 0.9 * unit(rng.normal(size=(n_probes, dim))))
    names = np.repeat(np.array([f"p{i}" for i in range(n_people)], dtype=object), per_person)
    return names, templates, probes


def bench_approximate(sizes: list[int], per_person: int, dim: int, runs: int,
                      n_probes: int) -> None:
    """Exact against approximate search at each size; logs one line per size."""
    import numpy as np

    from maskwatch.recognition import EmbeddingMatcher

    rng = np.random.default_rng(0)
    log.info("%9s %10s %10s %10s %9s %9s %9s %9s", "templates", "exact ms", "approx ms", "build s",
             "recall@1", "same who", "cells", "searched")
    for n in sizes:
        names, templates, probes = clustered(n, per_person, dim, n_probes, rng)
        flags = np.zeros(len(probes), bool)  # all templates plain: one index over all of them
        masked = np.zeros(len(names), bool)
        exact = EmbeddingMatcher(names, templates, masked, threshold=-1.0, approximate=False)
        approx = EmbeddingMatcher(names, templates, masked, threshold=-1.0, approximate=True)
        t0 = time.perf_counter()
        assert approx.uses_approximate()
        build_s = time.perf_counter() - t0
        index = approx._indexes["plain"][0]
        # recall: the exact top-1 template, in batches to bound memory
        ex_rows = np.concatenate([np.argmax(probes[i:i + 100] @ exact._unit.T, axis=1)
                                  for i in range(0, len(probes), 100)])
        ap_rows, _ = index.search(probes)
        recall = float(np.mean(ap_rows == ex_rows))
        same = float(np.mean(names[ap_rows] == names[ex_rows]))
        one, flag = probes[:1], flags[:1]
        t_ex = timeit(lambda m=exact, p=one, f=flag: m.identify(p, f), max(runs // 10, 5), warmup=2)
        t_ap = timeit(lambda m=approx, p=one, f=flag: m.identify(p, f), runs)
        log.info("%9d %10.2f %10.3f %10.1f %9.4f %9.4f %9d %9d", n, np.median(t_ex),
                 np.median(t_ap), build_s, recall, same, index.nlist, index.nprobe)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--templates", type=int, default=100_000)
    ap.add_argument("--per-person", type=int, default=10)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--db", help="gallery URL or path (default: a temporary SQLite file)")
    ap.add_argument("--blas-threads", type=int,
                    help="BLAS threads (default: the library's own choice)")
    ap.add_argument("--approximate", action="store_true",
                    help="compare exact search with the approximate index at --sizes "
                    "(in memory, no store)")
    ap.add_argument("--sizes", default="100000,500000,1000000",
                    help="template counts for --approximate")
    ap.add_argument("--probes", type=int, default=1000, help="probes for recall in --approximate")
    args = ap.parse_args()
    if args.blas_threads:  # must be set before numpy loads its BLAS
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.blas_threads)
    import numpy as np

    from maskwatch.gallery import open_gallery

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.approximate:
        log.info("%s, Python %s, %d CPUs, numpy %s", platform.processor() or platform.machine(),
                 platform.python_version(), os.cpu_count() or 0, np.__version__)
        log.info("%d-d unit templates, %d per person; median ms of one probe "
                 "(exact: brute force over all; approximate: faiss IVF); "
                 "recall@1 over %d probes against exact search", args.dim,
                 args.per_person, args.probes)
        bench_approximate([int(x) for x in args.sizes.split(",")], args.per_person, args.dim,
                          args.runs, args.probes)
        return
    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or str(Path(tmp) / "bench.sqlite3")
        with open_gallery(db) as g:
            fill_s = fill(g, args.templates, args.per_person, args.dim, rng)
            t0 = time.perf_counter()
            m = g.matcher(EMBEDDER, VERSION, max_age_s=0)
            load_s = time.perf_counter() - t0
            assert len(m) >= args.templates
            results: list[tuple[str, int, np.ndarray]] = []
            for batch in (1, 10):
                probes = rng.normal(size=(batch, args.dim)).astype(np.float32)
                flags = np.arange(batch) % 2 == 1
                results.append(("gallery.search", batch, timeit(
                    lambda p=probes, f=flags: g.search(p, f, embedder=EMBEDDER,
                                                       embedder_version=VERSION),
                    args.runs)))
                results.append(("matcher.identify", batch, timeit(
                    lambda p=probes, f=flags: m.identify(p, f), args.runs)))

    log.info("%s, Python %s, %d CPUs, numpy %s, BLAS threads: %s",
             platform.processor() or platform.machine(), platform.python_version(),
             os.cpu_count() or 0, np.__version__,
             os.environ.get("OPENBLAS_NUM_THREADS", "default"))
    log.info("gallery: %s, %d templates of %d dimensions (%d people), half masked",
             "SQLite (temporary)" if not args.db else args.db, len(m), args.dim,
             args.templates // args.per_person)
    log.info("fill: %.1f s (%.0f templates/s); load into the matcher: %.0f ms",
             fill_s, args.templates / fill_s, load_s * 1e3)
    for name, batch, t in results:
        med, p95 = np.median(t), np.percentile(t, 95)
        log.info("%-17s %2d probe(s): median %6.2f ms  p95 %6.2f ms  per probe %5.2f ms  %s",
                 name, batch, med, p95, med / batch,
                 "OK (<= 5 ms)" if med / batch <= 5.0 else "SLOWER than 5 ms")


if __name__ == "__main__":
    main()
