"""Peak memory of ``maskwatch serve`` answering big 16-bit RGBA uploads (issue 15).

Starts the real server (uvicorn on 127.0.0.1, empty gallery in a tmp data folder,
default limits: 10 MB and 40 M pixels), makes a 6000x6000 16-bit RGBA PNG (a smooth
gradient with alpha, about 0.5 MB; 288 MB at 16 bits once decoded), posts it to
``/api/analyze`` once, then N times at once, and samples the server's resident memory
(VmRSS) every 5 ms. Prints the idle RSS, the peak over idle for each round, the status
codes and the wall time (MB here: 2**20 bytes, as /proc counts).

    python benchmarks/bench_upload_memory.py                 # 1, then 4 at once
    python benchmarks/bench_upload_memory.py --rounds 1,4,8 --side 4000

Targets (issue 15): one upload under 300 MB over the idle server, 4 at once under 1 GB.
Before the fix one upload cost about 2.5-3 GB and 3 at once 7.75 GB.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' server runner and payloads
from tests.big_images import PeakRss, idle_rss_mb, rgba16_png, rss_mb  # noqa: E402
from tests.web.browser import running_server  # noqa: E402

PASSWORD = "bench upload memory password"


def post(url: str, data: bytes, timeout: float) -> int:
    import httpx

    r = httpx.post(url + "/api/analyze", files={"file": ("big16.png", data, "image/png")},
                   timeout=timeout)
    return r.status_code


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--side", type=int, default=6000, help="image side, pixels (default 6000)")
    ap.add_argument("--rounds", default="1,4", help="uploads at once, per round (default 1,4)")
    ap.add_argument("--timeout", type=float, default=180.0, help="per request, seconds")
    args = ap.parse_args()
    rounds = [int(x) for x in args.rounds.split(",") if x.strip()]
    data = rgba16_png(args.side)
    print(f"payload: {args.side}x{args.side} 16-bit RGBA PNG, {len(data) / 1e3:.0f} kB "
          f"({args.side ** 2 * 8 / 2**20:.0f} MB at 16 bits, "
          f"{args.side ** 2 * 3 / 2**20:.0f} MB as BGR uint8)")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        with running_server(home, PASSWORD) as srv:
            idle = idle_rss_mb(srv.pid)
            print(f"idle server RSS: {idle:.0f} MB")
            for n in rounds:
                t0 = time.perf_counter()
                before = rss_mb(srv.pid)
                with PeakRss(srv.pid) as peak, ThreadPoolExecutor(n) as pool:
                    codes = list(pool.map(lambda _: post(srv.url, data, args.timeout), range(n)))
                wall = time.perf_counter() - t0
                print(f"{n} at once: peak {peak.peak - idle:.0f} MB over idle ({peak.peak:.0f} MB; "
                      f"{peak.peak - before:.0f} MB over the RSS just before), status {codes}, "
                      f"{wall:.1f} s, {peak.samples} samples; "
                      f"RSS after: {rss_mb(srv.pid) - idle:.0f} MB over idle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
