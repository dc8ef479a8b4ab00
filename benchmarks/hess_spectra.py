"""Spectra of the H.E.S.S. DR1 Crab Nebula and PKS 2155-304 with the CNN background beside reflected regions.

Usage::

    python benchmarks/hess_spectra.py --output docs/results/hess_spectra.md

Each source is analysed twice with the same gammapy 1D configuration
(``examples/configs/crab_hess_cnn_1d.yaml`` and ``pks2155_hess_cnn_1d.yaml``:
0.11 deg ON region, per-run safe masks from 10% of the maximum effective area,
no stacking): once with ``background: method: cnn`` (each run's CNN background of
its whole field of view, from the counts alone, summed over the ON region; a
Cash fit) and once with gammapy's ``reflected`` regions (WStat fit). The model
is a power law (``examples/configs/*_power_law.yaml``); flux points come from
gammapy's ``FluxPointsEstimator`` with the config's bins. The goal of the issue:
index and amplitude within 1 sigma (statistical) of the reflected-region values.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from gammapy_cnn.analysis import CNNAnalysis, CNNAnalysisConfig
from gammapy_cnn.example_data import find_hess_dr1
from gammapy_cnn.utils import cpu_model, write_text_atomic

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"
SOURCES = {"crab": "Crab Nebula", "pks2155": "PKS 2155-304"}


def analyse(source, method, datastore):
    config = CNNAnalysisConfig.read(CONFIGS / f"{source}_hess_cnn_1d.yaml")
    config.observations.datastore = datastore
    config.datasets.background.method = method
    analysis = CNNAnalysis(config)
    start = time.perf_counter()
    analysis.run(["observations", "datasets"])
    reduced = time.perf_counter() - start
    analysis.read_models(CONFIGS / f"{source}_power_law.yaml")
    analysis.run(["fit", "flux-points"])
    info = analysis.datasets.info_table(cumulative=False)
    parameters = analysis.models[source].spectral_model.parameters
    points = analysis.flux_points.data.to_table(sed_type="e2dnde", formatted=False)
    return dict(
        n_runs=len(analysis.datasets), counts=float(np.sum(info["counts"])),
        background=float(np.sum(info["background"])), sqrt_ts=float(np.sqrt(max(np.sum(info["sqrt_ts"] ** 2), 0))),
        index=(parameters["index"].value, parameters["index"].error),
        amplitude=(parameters["amplitude"].value, parameters["amplitude"].error),
        stat=float(analysis.fit_result.total_stat), statistic=analysis.datasets[0].stat_type,
        points=[(float(e), float(f), float(df), bool(ul)) for e, f, df, ul in
                zip(points["e_ref"], points["e2dnde"], points["e2dnde_err"], points["is_ul"])],
        reduce_seconds=reduced,
    )


def markdown(source, results):
    cnn, reflected = results["cnn"], results["reflected"]
    lines = [f"## {SOURCES[source]} ({cnn['n_runs']} runs)", "",
             "| background | ON counts | background counts | index | amplitude at 1 TeV [1e-11 cm-2 s-1 TeV-1] "
             "| fit statistic | reduction [s] |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        (index, index_err), (amp, amp_err) = r["index"], r["amplitude"]
        lines.append(f"| {name} | {r['counts']:.0f} | {r['background']:.1f} | {index:.3f} +- {index_err:.3f} "
                     f"| {amp * 1e11:.3f} +- {amp_err * 1e11:.3f} | {r['statistic']} {r['stat']:.1f} "
                     f"| {r['reduce_seconds']:.1f} |")
    index_pull = (cnn["index"][0] - reflected["index"][0]) / reflected["index"][1]
    amp_pull = (cnn["amplitude"][0] - reflected["amplitude"][0]) / reflected["amplitude"][1]
    lines += ["", f"CNN minus reflected, in reflected-region statistical errors: index {index_pull:+.2f}, "
              f"amplitude {amp_pull:+.2f} (goal: within +-1).", "",
              "Flux points, E^2 dN/dE [1e-11 TeV cm-2 s-1] (UL: upper limit):", "",
              "| E [TeV] | CNN | reflected |", "|---|---|---|"]
    for (e, f, df, ul), (_, g, dg, ul2) in zip(cnn["points"], reflected["points"]):
        def cell(value, error, upper):
            return "UL" if upper else f"{value * 1e11:.3f} +- {error * 1e11:.3f}"
        lines.append(f"| {e:.2f} | {cell(f, df, ul)} | {cell(g, dg, ul2)} |")
    return "\n".join(lines + [""])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="H.E.S.S. DL3 DR1 folder (default: $GAMMAPY_DATA/hess-dl3-dr1)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    datastore = args.data or find_hess_dr1()
    if datastore is None:
        raise SystemExit("H.E.S.S. DL3 DR1 not found: set GAMMAPY_DATA or use --data")
    datastore = str(datastore)
    start = time.perf_counter()
    parts = ["# H.E.S.S. DR1 spectra: CNN background beside reflected regions", "",
             __doc__.split("\n\n", 2)[2].strip(), ""]
    for source in SOURCES:
        results = {method: analyse(source, method, datastore) for method in ("cnn", "reflected")}
        parts.append(markdown(source, results))
    parts.append(f"Command: `python benchmarks/hess_spectra.py --output {args.output}`; machine: {cpu_model()}, "
                 f"2 cores; {(time.perf_counter() - start) / 60:.1f} min.")
    write_text_atomic(args.output, "\n".join(parts) + "\n")
    print("\n".join(parts))


if __name__ == "__main__":
    main()
