"""Empty-field significance per energy band: is the CNN background right at every energy?

Usage::

    python benchmarks/energy_bands.py --n 40 --output docs/results/energy_bands.md

The CNN sees energy-integrated counts; the background cube is its image spread
over energy (`gammapy_cnn.background.split_in_energy`). The camera acceptance
widens with energy, so a single spatial shape may be wrong per band. Here,
source-free simulated maps (background norm +-10%, tilt +-0.05, the response's
own energy-dependent acceptance) at 100 s and 1800 s, on each response: in 20
random 0.3 deg apertures per map, within 2 deg of the pointing, the significance
(N - B) / sqrt(B) per energy band (below 0.3 TeV, 0.3-3 TeV, above 3 TeV) over
the CNN background and over the true background. An unbiased background gives
mean 0 and standard deviation 1 (the issue's goal: 0 +- 0.1 and 1 +- 0.1 at
1800 s). Apertures with fewer than 5 expected counts (true background) are left out (the Gaussian
approximation fails there).
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
from gammapy_cnn.simulation import MapParameters, SimulationTemplate
from gammapy_cnn.simulation.irf import irf_label
from gammapy_cnn.utils import cpu_model, write_text_atomic

BANDS = {"< 0.3 TeV": (0, 0.3), "0.3-3 TeV": (0.3, 3), "> 3 TeV": (3, np.inf)}
LIVETIMES = (100.0, 1800.0)
APERTURE = 0.3  # deg
MIN_EXPECTED = 5.0


def evaluate(irf, n, seed, network):
    template = SimulationTemplate(irf)
    maker = CNNBackgroundMaker(network)
    centres = template.energy_axis.center.to_value("TeV")
    binsz = template.binsz.to_value("deg")
    half = (template.npix - 1) / 2
    yy, xx = np.mgrid[: template.npix, : template.npix]
    rng = np.random.default_rng(seed)
    rows = []
    for livetime in LIVETIMES:
        sig = {(m, b): [] for m in ("cnn", "true") for b in BANDS}
        for _ in range(n):
            params = MapParameters(0, float(rng.uniform(0, 360)), float(rng.uniform(-50, 50)), livetime,
                                   float(rng.uniform(0.9, 1.1)), float(rng.uniform(-0.05, 0.05)), 0.0, 0.0, [])
            sim = template.simulate(params, rng)
            geom = template.geom(SkyCoord(params.pointing_ra, params.pointing_dec, unit="deg"))
            dataset = MapDataset(counts=Map.from_geom(geom, data=sim.counts.astype(float)), name="empty")
            backgrounds = {"cnn": maker.run(dataset).background.data,
                           "true": template.background(livetime, params.background_norm, params.background_tilt)}
            radius, angle = 2 * np.sqrt(rng.uniform(0, 1, 20)), rng.uniform(0, 2 * np.pi, 20)
            for r, a in zip(radius, angle):
                aperture = np.hypot(xx - half - r * np.cos(a) / binsz, yy - half - r * np.sin(a) / binsz) \
                    < APERTURE / binsz
                for band, (lo, hi) in BANDS.items():
                    bins = (centres >= lo) & (centres < hi)
                    n_on = sim.counts[bins][:, aperture].sum()
                    # both methods on the same apertures, chosen by the true expectation
                    if backgrounds["true"][bins][:, aperture].sum() < MIN_EXPECTED:
                        continue
                    for method, background in backgrounds.items():
                        mu = max(background[bins][:, aperture].sum(), 1e-3)
                        sig[method, band].append((n_on - mu) / np.sqrt(mu))
        for band in BANDS:
            row = dict(irf=irf_label(irf), livetime=livetime, band=band, n=n)
            for method in ("cnn", "true"):
                values = np.array(sig[method, band])
                row[f"{method}_mean"] = float(values.mean()) if len(values) else np.nan
                row[f"{method}_std"] = float(values.std()) if len(values) else np.nan
                row[f"{method}_apertures"] = len(values)
            rows.append(row)
            print(f"{row['irf']} {livetime:.0f} s {band}: CNN {row['cnn_mean']:+.2f} / {row['cnn_std']:.2f}, "
                  f"true {row['true_mean']:+.2f} / {row['true_std']:.2f} ({row['cnn_apertures']} apertures)",
                  flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--irf", nargs="+", default=None,
                        help="responses (default: default-z20 and, from $GAMMAPY_DATA, prod5 and CTA 1DC)")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=515151)
    parser.add_argument("--network", default="default")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    irfs = args.irf
    if irfs is None:
        data = gammapy_data_dir()
        irfs = ["default-z20", str(data / "cta-caldb" / "Prod5-North-20deg-AverageAz-4LSTs09MSTs.180000s-v0.1.fits.gz"),
                str(data / "cta-1dc-irf" / "South_z20_50h_irf_file.fits.gz")]
    start = time.time()
    rows = [row for irf in irfs for row in evaluate(irf, args.n, args.seed, args.network)]
    lines = ["# Empty fields per energy band", "", __doc__.split("\n\n", 2)[2].strip(), "",
             "| response | livetime [s] | band | CNN mean / std | true background mean / std | apertures |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        if row["cnn_apertures"] == 0:
            lines.append(f"| `{row['irf']}` | {row['livetime']:.0f} | {row['band']} | - | - | 0 |")
            continue
        lines.append(f"| `{row['irf']}` | {row['livetime']:.0f} | {row['band']} | "
                     f"{row['cnn_mean']:+.2f} / {row['cnn_std']:.2f} | {row['true_mean']:+.2f} / "
                     f"{row['true_std']:.2f} | {row['cnn_apertures']} |")
    lines += ["", f"Command: `python benchmarks/energy_bands.py --n {args.n} --seed {args.seed} --network "
              f"{args.network} --output {args.output}`; machine: {cpu_model()}, 2 cores; "
              f"{(time.time() - start) / 60:.1f} min."]
    write_text_atomic(args.output, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
