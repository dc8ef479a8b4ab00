"""Flux preservation of the background estimates: aperture excess over true signal, per flux and exposure.

Usage::

    python benchmarks/aperture_bias.py --n 100 --output docs/results/aperture_bias.md

The issue's goal: the excess counts (N - B) in a 0.2 deg aperture around each
true source have a median within +-10% of the true expected signal, for 0.1-3
Crab and 10 s-30 min. With ~10 maps per cell (`network_quality.py`) a median of
few-count apertures moves by +-15% from Poisson noise alone, so this script
gives each (flux, exposure) cell ``--n`` maps, one source each (index 2.5,
0-2 deg offset, background norm +-15% and tilt +-0.1), for each response, and
reports beside each CNN background the same numbers with the *true* expected
background: the noise floor of the statistic (at 10 s and 0.1 Crab a median of
Poisson ratios is not 0 even with the truth). Also reported: the stacked bias
sum(N - B) / sum(signal) - 1, the flux-preservation number with the least
noise.
"""

import argparse
import time
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from gammapy.datasets import MapDataset
from gammapy.maps import Map

from gammapy_cnn import CNNBackgroundMaker
from gammapy_cnn.example_data import gammapy_data_dir
from gammapy_cnn.simulation import MapParameters, SimulationTemplate, SourceParameters
from gammapy_cnn.simulation.irf import irf_label
from gammapy_cnn.utils import cpu_model, write_text_atomic

FLUXES = (0.1, 0.3, 1.0, 3.0)
LIVETIMES = (10.0, 100.0, 1800.0)
APERTURE = 0.2  # deg
#: IRFs compared besides ``default-z20``, in gammapy's data folder (``$GAMMAPY_DATA``).
PROD5 = "cta-caldb/Prod5-North-20deg-AverageAz-4LSTs09MSTs.180000s-v0.1.fits.gz"
IRF_1DC = "cta-1dc-irf/South_z20_50h_irf_file.fits.gz"


def default_irfs():
    """``default-z20`` and `PROD5`, `IRF_1DC` in `gammapy_data_dir` (skipped when absent)."""
    try:
        data = str(gammapy_data_dir())
    except FileNotFoundError:
        data = "$GAMMAPY_DATA"  # not found: main() says so and skips them
    return ["default-z20", f"{data}/{PROD5}", f"{data}/{IRF_1DC}"]


def evaluate(irf, n, seed, cleaners):
    template = SimulationTemplate(irf)
    makers = {name: CNNBackgroundMaker(name) for name in cleaners}
    binsz = template.binsz.to_value("deg")
    yy, xx = np.mgrid[: template.npix, : template.npix]
    rng = np.random.default_rng(seed)
    cells = {}
    for flux in FLUXES:
        for livetime in LIVETIMES:
            excess = {name: [] for name in list(makers) + ["true background"]}
            signal = []
            for _ in range(n):
                off, angle = rng.uniform(0, 2.0), rng.uniform(0, 2 * np.pi)
                params = MapParameters(
                    0, float(rng.uniform(0, 360)), float(rng.uniform(-50, 50)), livetime,
                    float(rng.uniform(0.85, 1.15)), float(rng.uniform(-0.1, 0.1)), 0.0, 0.0,
                    [SourceParameters(off * np.cos(angle), off * np.sin(angle), flux, 2.5, 0.0)])
                sim = template.simulate(params, rng)
                geom = template.geom(SkyCoord(params.pointing_ra, params.pointing_dec, unit="deg"))
                dataset = MapDataset(counts=Map.from_geom(geom, data=sim.counts.astype(float)))
                src = sim.sources[0]
                aperture = np.hypot(xx - src["x"], yy - src["y"]) * binsz < APERTURE
                counts = sim.counts.sum(axis=0)[aperture].sum()
                signal.append(sim.signal.sum(axis=0)[aperture].sum())
                truth = template.background(livetime, params.background_norm,
                                            params.background_tilt).sum(axis=0)
                excess["true background"].append(counts - truth[aperture].sum())
                for name, maker in makers.items():
                    background = maker.run(dataset).background.data.sum(axis=0)
                    excess[name].append(counts - background[aperture].sum())
            signal = np.array(signal)
            cells[(flux, livetime)] = {
                name: dict(median=float(np.median(np.array(v) / signal - 1)),
                           stacked=float(np.sum(v) / signal.sum() - 1))
                for name, v in excess.items()
            }
            cells[(flux, livetime)]["signal_median"] = float(np.median(signal))
    return cells


def markdown(label, cells, names, n):
    lines = [f"## IRF `{label}` ({n} maps per cell)", "",
             "Median of (N - B) / signal - 1 per map; in brackets the stacked "
             "sum(N - B) / sum(signal) - 1.", "",
             "| flux [Crab] | livetime [s] | signal counts (median) | "
             + " | ".join(name if name == "true background" else f"`{name}`" for name in names)
             + " |",
             "|---|---|---|" + "---|" * len(names)]
    for (flux, livetime), cell in cells.items():
        values = " | ".join(f"{cell[name]['median']:+.3f} ({cell[name]['stacked']:+.3f})"
                            for name in names)
        lines.append(f"| {flux} | {livetime:.0f} | {cell['signal_median']:.0f} | {values} |")
    return "\n".join(lines + [""])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--irf", nargs="+", default=default_irfs())
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=515151)
    parser.add_argument("--cleaners", nargs="+", default=["default", "original"])
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    start = time.time()
    names = list(args.cleaners) + ["true background"]
    parts = ["# Flux preservation: aperture excess per flux and exposure", "",
             __doc__.split("\n\n", 2)[2].strip(), ""]
    for irf in args.irf:
        if not (irf.startswith("default-") or Path(irf).exists()):
            print(f"skipping {irf}: not found")
            continue
        cells = evaluate(irf, args.n, args.seed, args.cleaners)
        parts.append(markdown(irf_label(irf), cells, names, args.n))
    irfs = " ".join(args.irf)
    parts.append(f"Command: `python benchmarks/aperture_bias.py --irf {irfs} --n {args.n} "
                 f"--seed {args.seed} --output {args.output}`; machine: {cpu_model()}, 2 cores; "
                 f"{(time.time() - start) / 60:.1f} min.")
    write_text_atomic(args.output, "\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
