"""Two versions of CNNSourceFinder on the same benchmark maps, in one process, interleaved.

Usage::

    git worktree add /tmp/gcnn-base <commit>
    python benchmarks/finder_ab.py --base /tmp/gcnn-base --irf default-z20 --n 30

Shared machines change speed by tens of percent from one minute to the next,
so two separate runs cannot tell a 10% gain from noise. Here the package of
the ``--base`` checkout is imported beside this one (copied under another
name), and each benchmark map (`gammapy-cnn benchmark`'s maps, seed
`~gammapy_cnn.benchmark.runner.BENCHMARK_SEED`) goes through both finders
twice, in alternating order, and through ring + excess map + find_peaks
once. Printed: the medians, the ratio of medians and the median of the
per-map ratios, each finder's time over ring + excess + find_peaks', and the
largest difference between the two finders' tables (positions, significance,
excess, extension, ts_ext, pos_err): 0 for a change that keeps the outputs.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import astropy.units as u
import numpy as np

from gammapy_cnn import CNNSourceFinder
from gammapy_cnn.benchmark import methods
from gammapy_cnn.benchmark.runner import BENCHMARK_SEED, REFERENCE_POINTING, _simulate_map
from gammapy_cnn.example_data import gammapy_data_dir
from gammapy_cnn.simulation import Scenario
from gammapy_cnn.simulation.batch import get_template
from gammapy_cnn.utils import cpu_model

COMPARED = ("x", "y", "significance", "excess", "extension", "ts_ext", "pos_err")
RESPONSES = {
    "prod5": "cta-caldb/Prod5-North-20deg-AverageAz-4LSTs09MSTs.180000s-v0.1.fits.gz",
    "1dc": "cta-1dc-irf/South_z20_50h_irf_file.fits.gz",
}


def import_base(checkout):
    """The ``gammapy_cnn`` package of another checkout, imported as ``gammapy_cnn_base``."""
    source = Path(checkout) / "gammapy_cnn"
    if not (source / "__init__.py").is_file():
        raise SystemExit(f"--base {checkout}: no gammapy_cnn package there")
    folder = Path(tempfile.mkdtemp(prefix="finder-ab-"))
    shutil.copytree(source, folder / "gammapy_cnn_base")  # relative imports only: it imports as itself
    sys.path.insert(0, str(folder))
    import gammapy_cnn_base

    return gammapy_cnn_base


def benchmark_maps(response, n):
    scenario = Scenario.preset("benchmark")
    if response != "default-z20":
        irf = Path(gammapy_data_dir()) / RESPONSES.get(response, response)
        scenario = Scenario.from_dict({**scenario.model_dump(mode="json"), "irf": [str(irf)]})
    templates = [get_template(name, scenario.geometry) for name in scenario.irf]
    references = [t.reference_dataset(REFERENCE_POINTING, 1 * u.s) for t in templates]
    return [_simulate_map(templates, references, scenario, BENCHMARK_SEED, i) for i in range(n)]


def timed(function, *args):
    start = time.perf_counter()
    out = function(*args)
    return out, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="checkout of the version to compare with")
    parser.add_argument("--irf", default="default-z20", help="default-z20, prod5, 1dc or an IRF file")
    parser.add_argument("--n", type=int, default=30, help="benchmark maps")
    args = parser.parse_args()
    base_finder, finder = import_base(args.base).CNNSourceFinder(), CNNSourceFinder()
    maps = benchmark_maps(args.irf, args.n)
    # warm-up: network conversion and lazy imports are not per-map time
    for f in (base_finder, finder):
        f.run(maps[0].dataset)
    methods.find_ring_excess(methods.ring_dataset(maps[0]))
    times = {"base": [], "new": [], "ring": []}
    largest = 0.0
    for k, bmap in enumerate(maps):
        order = [("base", base_finder), ("new", finder)]
        tables = {}
        for label, f in order + order[::-1] if k % 2 else order[::-1] + order:
            tables[label], seconds = timed(f.run, bmap.dataset)
            times[label].append(seconds)
        times["ring"].append(timed(lambda m: methods.find_ring_excess(methods.ring_dataset(m)), bmap)[1])
        a, b = tables["base"], tables["new"]
        if len(a) != len(b):
            largest = np.inf
            continue
        for column in COMPARED:
            difference = np.abs(np.asarray(a[column], float) - np.asarray(b[column], float))
            difference = difference[np.isfinite(difference)]
            largest = max(largest, float(difference.max()) if difference.size else 0.0)
    base, new, ring = (np.array(times[k]) for k in ("base", "new", "ring"))
    per_map = new.reshape(-1, 2).mean(axis=1) / base.reshape(-1, 2).mean(axis=1)
    print(f"{args.irf}, {args.n} maps, {cpu_model()}, {os.cpu_count()} cores:")
    print(f"  finder run p50: base {1e3 * np.median(base):.1f} ms, new {1e3 * np.median(new):.1f} ms; "
          f"new / base {np.median(new) / np.median(base):.3f} (median per map {np.median(per_map):.3f})")
    print(f"  ring + excess + find_peaks p50 {1e3 * np.median(ring):.1f} ms: base / ring "
          f"{np.median(base) / np.median(ring):.3f}, new / ring {np.median(new) / np.median(ring):.3f}")
    print(f"  largest difference of the tables: {largest:.3g}" + (" (row counts differ)" if largest == np.inf else ""))


if __name__ == "__main__":
    main()
