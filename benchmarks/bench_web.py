"""Web app benchmark: live page frame rate, round-trip latency and server memory.

Starts ``maskwatch serve`` in a subprocess (empty gallery in a tmp data folder), opens
N pages of headless Chromium (Debian's ``/usr/bin/chromium`` driven by Playwright)
whose fake camera plays 640x480 frames composed from LFW faces exactly as
``maskwatch bench`` composes them (:func:`maskwatch.bench.compose_sequence`; every
other face masked), lets them warm up, then reads each page's processed frames per
second and round-trip latency (frame grabbed from the video to overlay drawn, as the
page measures it: ``window.maskwatchStats``) and samples the server's resident memory
every second. Everything runs on this machine: the browser competes with the server
for the same cores, as it would on a laptop.

    python benchmarks/bench_web.py        # 1 and 3 faces with 1 page, 3 faces with 8 pages
    python benchmarks/bench_web.py --runs 1x1 --seconds 10

Targets (issue 5): >= 20 frames/s and <= 120 ms p95 with 1 to 3 faces and one page;
8 pages at once all get results and the server's memory stays bounded.
Writes the table to docs/results/web-bench.txt (``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the browser tests' server and Chromium helpers
from tests.web.browser import CHROMIUM, chromium_args, running_server  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def build_camera(datasets: Path, faces: int, out: Path, frames: int = 150) -> Path:
    from maskwatch.bench import compose_sequence
    from maskwatch.ops.y4m import write_y4m

    path = out / f"faces{faces}.y4m"
    if not path.exists():
        write_y4m(compose_sequence(datasets / "lfw-identities" / "images", faces, frames,
                                   seed=faces),
                  path, fps=30)
    return path


def run_config(datasets: Path, tmp: Path, faces: int, pages: int, warmup_s: float, seconds: float,
               inflight: int) -> dict:
    from playwright.sync_api import sync_playwright

    camera = build_camera(datasets, faces, tmp)
    home = tmp / f"home-{faces}-{pages}"
    home.mkdir(exist_ok=True)
    rss: list[tuple[float, float]] = []
    load_before = load_average()
    with running_server(home, "bench-password", "-q", timeout=120.0) as (url, pid):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                        args=chromium_args(camera))
            context = browser.new_context()
            tabs = []
            for _ in range(pages):
                tab = context.new_page()
                tab.goto(f"{url}/?autostart=1&inflight={inflight}")
                tabs.append(tab)
            t_start = time.time()
            for tab in tabs:
                tab.wait_for_function(
                    "() => window.maskwatchStats && window.maskwatchStats.frames > 0",
                    timeout=120_000)
            first_result_s = time.time() - t_start
            end_warm = time.time() + warmup_s
            while time.time() < end_warm:
                rss.append((time.time() - t_start, rss_mb(pid)))
                time.sleep(1.0)
            for tab in tabs:
                tab.evaluate("() => window.maskwatchResetStats()")
            t0 = time.time()
            rss_measure_start = len(rss)
            while time.time() < t0 + seconds:
                rss.append((time.time() - t_start, rss_mb(pid)))
                time.sleep(1.0)
            per_page = []
            for tab in tabs:
                s = tab.evaluate("() => ({frames: window.maskwatchStats.frames,"
                                 " p50: window.maskwatchStats.latencyP50,"
                                 " p95: window.maskwatchStats.latencyP95,"
                                 " errors: window.maskwatchStats.errors,"
                                 " faces: window.maskwatchStats.faces,"
                                 " srv50: window.maskwatchStats.serverP50,"
                                 " srv95: window.maskwatchStats.serverP95})")
                s["fps"] = s["frames"] / (time.time() - t0)
                per_page.append(s)
            context.close()
            browser.close()
    measured = [m for _, m in rss[rss_measure_start:]] or [float("nan")]
    return {
        "faces": faces, "pages": pages, "inflight": inflight, "first_result_s": first_result_s,
        "pages_with_results": sum(1 for s in per_page if s["frames"] > 0),
        "fps_each": [round(s["fps"], 1) for s in per_page],
        "fps_min": min(s["fps"] for s in per_page), "fps_total": sum(s["fps"] for s in per_page),
        "p50_ms": statistics.median(s["p50"] for s in per_page if s["p50"] is not None)
        if per_page[0]["p50"] else None,
        "p95_ms_max": max((s["p95"] for s in per_page if s["p95"] is not None), default=None),
        "errors": sum(s["errors"] for s in per_page),
        "server_p50_ms": statistics.median(s["srv50"] for s in per_page if s["srv50"] is not None)
        if any(s["srv50"] is not None for s in per_page) else None,
        "server_p95_ms_max": max((s["srv95"] for s in per_page if s["srv95"] is not None),
                                 default=None),
        "rss_start_mb": measured[0], "rss_peak_mb": max(m for _, m in rss),
        "rss_end_mb": measured[-1],
        "rss_series": [(round(t), round(m)) for t, m in rss],
        "load_before": load_before, "load_after": load_average(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=str(REPO.parent / "shared" / "datasets"))
    ap.add_argument("--runs", default="1x1,3x1,3x8",
                    help="FACESxPAGES, comma-separated (default 1x1,3x1,3x8)")
    ap.add_argument("--warmup", type=float, default=8.0, help="seconds before measuring")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds measured per run")
    ap.add_argument("--inflight", type=int, default=1,
                    help="frames a page keeps in flight (1-4; the page default is 1)")
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "web-bench.txt"))
    args = ap.parse_args()
    datasets = Path(args.datasets)
    if not (datasets / "lfw-identities" / "images").is_dir():
        raise SystemExit(f"{datasets}: shared datasets not found (--datasets)")
    if not CHROMIUM.is_file():
        raise SystemExit(f"{CHROMIUM} not found: apt-get install chromium")
    runs = [tuple(int(x) for x in r.split("x")) for r in args.runs.split(",") if r.strip()]
    lines = [f"maskwatch web benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, "
             f"{os.cpu_count()} CPUs, server + headless Chromium on the same machine, loopback",
             f"640x480 fake camera at 30 fps (LFW faces composed as by `maskwatch bench`), "
             f"{args.inflight} frames in flight per page, {args.warmup:g} s warm-up, "
             f"{args.seconds:g} s measured", ""]
    header = (f"{'faces':>5} {'pages':>5} | {'fps/page (min)':>14} {'fps total':>9} | "
              f"{'p50 ms':>7} {'p95 ms':>7} | {'server p50/p95':>14} | "
              f"{'pages w/ results':>16} {'errors':>6} | {'RSS start/peak/end MB':>22} | "
              f"load before -> after")
    lines += [header, "-" * len(header)]
    print("\n".join(lines), flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        for faces, pages in runs:
            r = run_config(datasets, Path(tmp), faces, pages, args.warmup, args.seconds,
                           args.inflight)
            results.append(r)
            p50 = f"{r['p50_ms']:.0f}" if r["p50_ms"] is not None else "-"
            p95 = f"{r['p95_ms_max']:.0f}" if r["p95_ms_max"] is not None else "-"
            srv = (f"{r['server_p50_ms']:.0f}/{r['server_p95_ms_max']:.0f}"
                   if r["server_p50_ms"] is not None else "-")
            row = (f"{faces:>5} {pages:>5} | {r['fps_min']:>14.1f} {r['fps_total']:>9.1f} | "
                   f"{p50:>7} {p95:>7} | {srv:>14} | "
                   f"{r['pages_with_results']:>13}/{pages:<2} {r['errors']:>6} | "
                   f"{r['rss_start_mb']:>6.0f}/{r['rss_peak_mb']:>5.0f}/"
                   f"{r['rss_end_mb']:>5.0f}     | "
                   f"{r['load_before']} -> {r['load_after']}")
            lines.append(row)
            print(row, flush=True)
    lines += ["",
              ("p50: median over pages of each page's median round trip; "
               "p95: the worst page's p95. server: JPEG"),
              ("decode + engine time inside the server "
               "(the rest of the round trip is the browser grabbing and"),
              ("encoding the frame, the WebSocket, "
               "waiting behind the page's other frame in flight, and drawing)."),
              "Server RSS (seconds since the pages opened, MB) per run:"]
    for r in results:
        lines.append(f"  {r['faces']} faces x {r['pages']} pages: "
                     f"fps per page {r['fps_each']}; RSS {r['rss_series']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
