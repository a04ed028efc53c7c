"""Does `hangar du` stay fast when every model shares one base layer? (issue 9: it was quadratic.)

Stores of 2,500, 5,000 and 10,000 models that all share one base layer and one config, each with a
layer of its own; a real `hangar serve` on each; `GET /api/hangar/du` (every model, with its sharers
summarised) timed as the median of 3. Prints the figures, the ratio 10,000/2,500 (linear is 4) and
the target: 10,000 models in under 1 s.

    python bench/du_scaling.py [--sizes 2500,5000,10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from delete_scaling import free_port, populate

TARGET_SECONDS = 1.0


def measure(n: int) -> float:
    with tempfile.TemporaryDirectory(prefix="hangar-du-") as tmp:
        home = Path(tmp) / "home"
        populate(home, n, shared_layers=1, configs_n=1)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HANGAR_")}
        env |= {"HANGAR_HOME": str(home), "HANGAR_LOG_LEVEL": "warning", "HANGAR_GC_INTERVAL": "1h"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelhangar.cli.main", "serve", "--host", f"127.0.0.1:{port}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(url + "/api/version", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            times = []
            with httpx.Client(base_url=url, timeout=120) as client:
                for _ in range(3):
                    start = time.perf_counter()
                    r = client.get("/api/hangar/du")
                    times.append(time.perf_counter() - start)
                    doc = r.json()
                    assert r.status_code == 200 and doc["model_count"] == n, r.text[:200]
                    first = doc["models"][0]
                    assert first["shared_with_count"] == n - 1 and len(first["shared_with"]) <= 3
            return statistics.median(times)
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="2500,5000,10000")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    figures = {n: measure(n) for n in sizes}
    for n, seconds in figures.items():
        print(f"{n:>7} models sharing one base: GET /api/hangar/du {seconds:.3f} s")
    small, large = sizes[0], sizes[-1]
    print(f"ratio {large}/{small}: {figures[large] / figures[small]:.2f} (linear: {large / small:.1f})")
    verdict = "met" if figures[large] < TARGET_SECONDS else "NOT met"
    print(f"target: {large} models in under {TARGET_SECONDS:g} s: {figures[large]:.3f} s, {verdict}")


if __name__ == "__main__":
    main()
