"""Is the web UI's model list fast at 100,000 models? (issue 14: "paginated, fast at 100,000 models")

For each store size: a store of small models that share layers (bench/delete_scaling.py's `populate`:
blob files through the store, catalog rows bulk-inserted), then the list's figures each repository
row keeps (`core/repo_figures.py`) filled in through the core, then a real `hangar serve` on it. Times
`GET /ui/models` (median of 3, after one warm-up) for the first page and the last page (the deepest
`?page=N`) of each sort (name, size, age), unfiltered and with a text filter (`q=model9`, which
about a ninth of the names contain), and prints the server's RSS after the requests.
Target (README, "The web UI"): the first page in at most 0.3 s at 100,000 models, every sort and filter.

    python bench/web_models.py [--sizes 10000,100000]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
from delete_scaling import populate, rss_mib
from modelhangar.core.catalog import schema as t
from modelhangar.core.config import load_settings
from modelhangar.core.store import Store
from peers import start_hangar, stop

TARGET_S = 0.3
FILTER = "model9"
SORTS = ("name", "size", "age")


def seed(home: Path, n: int) -> float:
    """The store of n models, with the figures the list sorts by kept as the core keeps them."""
    t0 = time.perf_counter()
    populate(home, n)
    try:
        from modelhangar.core import repo_figures
    except ImportError:  # a checkout from before the figures were kept
        return time.perf_counter() - t0
    store = Store(load_settings({"HANGAR_HOME": str(home)}))
    try:
        with store.catalog.write() as conn:
            ids = list(conn.execute(sa.select(t.repositories.c.id)).scalars())
            repo_figures.refresh(conn, ids)
    finally:
        store.close()
    return time.perf_counter() - t0


def timed(client: httpx.Client, path: str) -> tuple[float, str]:
    client.get(path).raise_for_status()  # warm-up: templates compiled, pages of the catalog cached
    times, text = [], ""
    for _ in range(3):
        t0 = time.perf_counter()
        r = client.get(path)
        times.append(time.perf_counter() - t0)
        r.raise_for_status()
        text = r.text
    return statistics.median(times), text


def last_page(html: str) -> int:
    m = re.search(r"page \d+ of (\d+)", html)
    return int(m.group(1)) if m else 1


def measure(n: int, workdir: Path) -> list[tuple[str, float]]:
    home = workdir / f"store-{n}"
    setup = seed(home, n)
    url, proc = start_hangar(home)
    rows: list[tuple[str, float]] = []
    try:
        with httpx.Client(base_url=url, timeout=300) as client:
            for q in ("", FILTER):
                for sort in SORTS:
                    base = f"/ui/models?sort={sort}" + (f"&q={q}" if q else "")
                    first, html = timed(client, base)
                    rows.append((f"{sort:<4} {'q=' + q if q else 'all':<8} first page", first))
                    pages = last_page(html)
                    deep, html = timed(client, f"{base}&page={pages}")
                    assert f"page {pages} of {pages}" in html, html[:300]
                    rows.append((f"{sort:<4} {'q=' + q if q else 'all':<8} page {pages}", deep))
            rss = rss_mib(proc.pid)
    finally:
        stop(proc)
    print(f"{n} models (set-up {setup:.1f} s), server RSS after the requests {rss:.0f} MiB", flush=True)
    for label, seconds in rows:
        print(f"  GET /ui/models {label:<28} {seconds * 1000:8.1f} ms", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="hangar-web-bench-") as tmp:
        figures = {n: measure(n, Path(tmp)) for n in sizes}
    big = sizes[-1]
    worst = max(s for label, s in figures[big] if "first page" in label)
    verdict = "MET" if worst <= TARGET_S else "NOT MET"
    print(f"target: first page at most {TARGET_S} s at {big} models, every sort and filter:")
    print(f"  slowest first page {worst:.3f} s -> {verdict}")


if __name__ == "__main__":
    main()
