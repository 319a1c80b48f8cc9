"""Exact gallery search time over many templates (target: at most 5 ms per search).

Fills a gallery (a temporary SQLite file unless ``--db`` is given: use an empty
database, it is filled) with random unit 128-d templates, half of them masked, then
times, on the cached matcher: the median and p95 time of one search with 1 probe and
with 10 probes (and per probe), through ``Gallery.search`` (which also looks at the
store's change stamp at most once a second) and through the bare matcher.

    python benchmarks/bench_search.py [--templates 100000] [--per-person 10] [--runs 200] [--db URL]
                                      [--blas-threads 1]

On a CPU whose cores are busy (the engine's detector, or any other job), a
multi-threaded BLAS waits for a free core on every matrix product: one search then
takes a scheduler time slice (about 8 ms) instead of a fraction of a millisecond.
``--blas-threads 1`` shows the time with a single-threaded BLAS (the setting to run
the engine with on a small CPU: ``OPENBLAS_NUM_THREADS=1``).
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

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("bench_search")
EMBEDDER, VERSION = "bench-random", "1"


def timeit(fn, runs: int, warmup: int = 10) -> np.ndarray:
    """Milliseconds per call of ``fn``, ``runs`` times after ``warmup`` calls."""
    import numpy as np

    for _ in range(warmup):
        fn()
    out = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out * 1e3


def fill(gallery, n_templates: int, per_person: int, dim: int, rng: np.random.Generator) -> float:
    """Add ``n_templates`` random templates; returns the seconds it took."""
    import numpy as np

    from maskwatch.gallery import Template

    t0 = time.perf_counter()
    masked = np.arange(per_person) % 2 == 1
    for i in range(n_templates // per_person):
        emb = rng.normal(size=(per_person, dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        gallery.add_person(f"person {i:06d}", templates=[
            Template("", emb[j], EMBEDDER, VERSION, bool(masked[j]), bool(masked[j])) for j in range(per_person)])
        if i % 2000 == 1999:
            log.info("%d templates added", (i + 1) * per_person)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--templates", type=int, default=100_000)
    ap.add_argument("--per-person", type=int, default=10)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--db", help="gallery URL or path (default: a temporary SQLite file)")
    ap.add_argument("--blas-threads", type=int, help="BLAS threads (default: the library's own choice)")
    args = ap.parse_args()
    if args.blas_threads:  # must be set before numpy loads its BLAS
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.blas_threads)
    import numpy as np

    from maskwatch.gallery import open_gallery

    logging.basicConfig(level=logging.INFO, format="%(message)s")
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
                    lambda p=probes, f=flags: g.search(p, f, embedder=EMBEDDER, embedder_version=VERSION),
                    args.runs)))
                results.append(("matcher.identify", batch, timeit(lambda p=probes, f=flags: m.identify(p, f),
                                                                  args.runs)))

    log.info("%s, Python %s, %d CPUs, numpy %s, BLAS threads: %s", platform.processor() or platform.machine(),
             platform.python_version(), os.cpu_count() or 0, np.__version__,
             os.environ.get("OPENBLAS_NUM_THREADS", "default"))
    log.info("gallery: %s, %d templates of %d dimensions (%d people), half masked",
             "SQLite (temporary)" if not args.db else args.db, len(m), args.dim, args.templates // args.per_person)
    log.info("fill: %.1f s (%.0f templates/s); load into the matcher: %.0f ms",
             fill_s, args.templates / fill_s, load_s * 1e3)
    for name, batch, t in results:
        med, p95 = np.median(t), np.percentile(t, 95)
        log.info("%-17s %2d probe(s): median %6.2f ms  p95 %6.2f ms  per probe %5.2f ms  %s", name, batch, med,
                 p95, med / batch, "OK (<= 5 ms)" if med / batch <= 5.0 else "SLOWER than 5 ms")


if __name__ == "__main__":
    main()
