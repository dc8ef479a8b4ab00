"""Peak memory (RSS) of simulating, training and finding, each in its own process.

Every step runs as a subprocess; its peak resident memory comes from
``os.wait4`` (the kernel's ``ru_maxrss``, as ``resource.getrusage`` reports
it), and its resident memory is also sampled every 0.5 s from ``/proc`` to
show whether it grows during the run. Each step runs at two scales so the
growth per map can be measured and extrapolated to the production sizes
(50k simulated maps, training on a 50k-map file, the finder over 10k maps).

Usage::

    python benchmarks/memory.py --workdir runs/memory            # full run (10-25 min, 2 cores)
    python benchmarks/memory.py --workdir runs/memory --quick    # smoke test (~3 min)

Writes ``WORKDIR/memory.json`` and prints a Markdown table.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

GB = 1024**3


def measure(args, label, log_dir):
    """Run a command; return its peak RSS (bytes), wall time and sampled RSS curve."""
    log_path = Path(log_dir) / f"{label}.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(a) for a in args], stdout=log, stderr=subprocess.STDOUT, env=env)
        samples = []
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
                samples.append((round(time.perf_counter() - start, 1), rss * 1024))
            except (OSError, StopIteration):
                pass
            time.sleep(0.5)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{label} failed ({proc.returncode}); see {log_path}")
    # ru_maxrss is in kB on Linux; it covers the process and the children it waited for
    peak = usage.ru_maxrss * 1024
    curve = samples
    quarter = {f"rss_at_{q}pct": _at(curve, q / 100) for q in (25, 50, 75, 100)}
    print(f"{label}: peak RSS {peak / GB:.2f} GB in {wall:.0f} s", flush=True)
    return dict(label=label, command=" ".join(map(str, args)), peak_rss=peak, wall_s=round(wall, 1),
                **quarter)


def _at(curve, fraction):
    if not curve:
        return None
    return curve[min(int(fraction * len(curve)), len(curve) - 1)][1]


def recipe(path, kind, steps, epochs=2):
    path.write_text(f"kind: {kind}\narchitecture: default\nepochs: {epochs}\nbatch_size: 32\n"
                    f"steps_per_epoch: {max(steps // epochs, 1)}\nvalidation_fraction: 0.03\n"
                    "learning_rate: 0.002\nseed: 1\naugment: true\n")
    return path


def cli(*args):
    return [sys.executable, "-c", "from gammapy_cnn.cli import main; main()", *map(str, args)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/memory"))
    parser.add_argument("--maps", type=int, default=2000, help="Maps in the large file.")
    parser.add_argument("--maps-small", type=int, default=500, help="Maps in the small file.")
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--slope-steps", type=int, default=20,
                        help="Steps of the short trainings on both files (growth with file size).")
    parser.add_argument("--find-maps", type=int, default=500)
    parser.add_argument("--find-maps-small", type=int, default=100)
    parser.add_argument("--big-map", type=int, default=4096, help="Side of the largest map (pixels).")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes, to check the script.")
    opts = parser.parse_args()
    if opts.quick:
        opts.maps, opts.maps_small, opts.train_steps, opts.slope_steps = 160, 80, 6, 2
        opts.find_maps, opts.find_maps_small, opts.big_map = 20, 10, 1600
    work = opts.workdir
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results = []
    small, large = work / f"sim_{opts.maps_small}.h5", work / f"sim_{opts.maps}.h5"

    results.append(measure([sys.executable, "-c", "import gammapy_cnn.training"], "import", logs))
    for n, path in ((opts.maps_small, small), (opts.maps, large)):
        results.append(measure(cli("simulate", "--n", n, "--output", path, "--seed", 11,
                                   "--no-progress"), f"simulate_{n}", logs))
    nets = {}
    for kind in ("cleaner", "finder"):
        nets[kind] = work / f"{kind}_{opts.train_steps}steps.keras"
        cfg = recipe(work / f"{kind}.yaml", kind, opts.train_steps)
        results.append(measure(cli("train", kind, "--data", large, "--output", nets[kind],
                                   "--config", cfg), f"train_{kind}_{opts.train_steps}steps", logs))
    cfg = recipe(work / "finder_short.yaml", "finder", opts.slope_steps, epochs=1)
    for n, path in ((opts.maps_small, small), (opts.maps, large)):
        results.append(measure(cli("train", "finder", "--data", path, "--output",
                                   work / f"finder_short_{n}.keras", "--config", cfg),
                               f"train_finder_{opts.slope_steps}steps_{n}maps", logs))
    for n in (opts.find_maps_small, opts.find_maps):
        results.append(measure([sys.executable, __file__, "_find", large, nets["finder"],
                                nets["cleaner"], n], f"find_{n}maps", logs))
    for side, tiles in ((opts.big_map // 2, "on"), (opts.big_map, "on"), (opts.big_map, "off")):
        results.append(measure([sys.executable, __file__, "_bigmap", nets["finder"], nets["cleaner"],
                                side, tiles], f"bigmap_{side}_tiles_{tiles}", logs))

    out = work / "memory.json"
    by = {r["label"]: r for r in results}
    summary = extrapolate(by, opts)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(results=results, extrapolation=summary, options=vars(opts)),
                              indent=1, default=str))
    os.replace(tmp, out)
    print(table(results, summary))


def extrapolate(by, opts):
    """Linear growth per map between the two scales, carried to the production sizes."""
    def line(a, b, na, nb, target):
        slope = (by[b]["peak_rss"] - by[a]["peak_rss"]) / (nb - na)
        return dict(slope_bytes_per_map=slope, at_target=by[b]["peak_rss"] + max(slope, 0) * (target - nb),
                    target=target)

    sim = line(f"simulate_{opts.maps_small}", f"simulate_{opts.maps}", opts.maps_small, opts.maps, 50_000)
    tr = line(f"train_finder_{opts.slope_steps}steps_{opts.maps_small}maps",
              f"train_finder_{opts.slope_steps}steps_{opts.maps}maps", opts.maps_small, opts.maps, 50_000)
    worst_train = max(by[f"train_{k}_{opts.train_steps}steps"]["peak_rss"] for k in ("cleaner", "finder"))
    tr["at_target"] = worst_train + max(tr["slope_bytes_per_map"], 0) * (50_000 - opts.maps)
    find = line(f"find_{opts.find_maps_small}maps", f"find_{opts.find_maps}maps",
                opts.find_maps_small, opts.find_maps, 10_000)
    return dict(simulate=sim, train=tr, find=find)


def table(results, summary):
    rows = ["| step | peak RSS (GB) | RSS at 25 / 50 / 100 % of the run (GB) | wall (s) |",
            "|---|---|---|---|"]
    for r in results:
        curve = " / ".join(f"{r[k] / GB:.2f}" if r[k] else "-" for k in
                           ("rss_at_25pct", "rss_at_50pct", "rss_at_100pct"))
        rows.append(f"| {r['label']} | {r['peak_rss'] / GB:.2f} | {curve} | {r['wall_s']:.0f} |")
    rows += ["", "| extrapolated | growth per map (kB) | peak RSS at target (GB) |", "|---|---|---|"]
    for name, s in summary.items():
        rows.append(f"| {name} ({s['target']} maps) | {s['slope_bytes_per_map'] / 1024:.1f} | "
                    f"{s['at_target'] / GB:.2f} |")
    return "\n".join(rows)


# --- workloads run in the child processes ----------------------------------------


def _find(data, finder_path, cleaner_path, n):
    """The finder over the first ``n`` maps of a simulation file, one map at a time."""
    import numpy as np
    from gammapy.datasets import MapDataset
    from gammapy.maps import Map, MapAxis, WcsGeom

    from gammapy_cnn import CNNSourceFinder
    from gammapy_cnn.simulation.io import SimulationReader

    finder = CNNSourceFinder(network=finder_path, background_network=cleaner_path, threshold=0.3)
    n_candidates = 0
    with SimulationReader(data) as reader:
        energy = MapAxis.from_energy_edges(reader.energy_edges, unit="TeV", name="energy")
        for i in range(int(n)):
            row = reader.maps[i]
            geom = WcsGeom.create(skydir=(row["pointing_ra"], row["pointing_dec"]), npix=200,
                                  binsz=reader.binsz, frame="icrs", proj="TAN", axes=[energy])
            counts = Map.from_geom(geom, data=reader.counts(i).astype(np.float32))
            n_candidates += len(finder.run(MapDataset(counts=counts, name=f"map{i}")))
    print(f"{n} maps, {n_candidates} candidates")


def _bigmap(finder_path, cleaner_path, side, tiles="on"):
    """Background and candidates of one ``side`` x ``side`` map of 0.025 deg pixels."""
    import numpy as np
    from gammapy.datasets import MapDataset
    from gammapy.maps import Map, WcsGeom

    from gammapy_cnn import CNNBackgroundMaker, CNNSourceFinder
    from gammapy_cnn.networks import Network

    if tiles == "off":  # for comparison: the whole map in one network call
        Network.tile_size = 10**6

    side = int(side)
    geom = WcsGeom.create(skydir=(83.6, 22.0), npix=side, binsz=0.025, frame="icrs", proj="CAR")
    rng = np.random.default_rng(0)
    dataset = MapDataset(counts=Map.from_geom(geom, data=rng.poisson(0.2, (side, side)).astype(np.float32)))
    start = time.perf_counter()
    out = CNNBackgroundMaker(network=cleaner_path).run(dataset)
    table = CNNSourceFinder(network=finder_path, background_network=cleaner_path, threshold=0.3).run(dataset)
    print(f"{side}^2 map: background sum {out.background.data.sum():.0f}, {len(table)} candidates, "
          f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("_find", "_bigmap"):
        {"_find": _find, "_bigmap": _bigmap}[sys.argv[1]](*sys.argv[2:])
    else:
        main()
