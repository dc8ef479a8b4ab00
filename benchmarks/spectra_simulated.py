"""Spectral bias of the CNN background on simulations: power-law fits beside the true background.

Usage::

    python benchmarks/spectra_simulated.py --n 20 --output docs/results/spectra_simulated.md

Each map: 1800 s, one point source of 1 Crab (the issue's case) or 0.1 Crab (index 2.5) 0.5-2 deg from the
pointing in a random direction, background norm +-10% and tilt +-0.05, on 14
energy bins from 0.03 to 100 TeV (4 per decade), on each response. The CNN
background of the map (counts only) and the true background are each summed
over a 0.2 deg ON region at the source (``MapDataset.to_spectrum_dataset`` of
the full IRF dataset, no containment correction: the same for both), and a
power law (index and amplitude free, reference 1 TeV) is fitted with Cash
statistics. The bias is the median over the maps of the CNN fit minus the
true-background fit (index) and of their ratio minus 1 (amplitude); the
issue's goal is |index bias| <= 0.03 and |amplitude bias| <= 3%. The scatter
columns are the standard deviations of those differences; the statistical
error is the median fit error of the true-background fit.
"""

import argparse
import time
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from gammapy.datasets import MapDataset
from gammapy.maps import Map, MapAxis
from gammapy.modeling import Fit
from gammapy.modeling.models import PowerLawSpectralModel, SkyModel
from regions import CircleSkyRegion

from gammapy_cnn import CNNBackgroundMaker
from gammapy_cnn.benchmark import scaled_reference
from gammapy_cnn.example_data import gammapy_data_dir
from gammapy_cnn.simulation import MapParameters, SimulationTemplate, SourceParameters
from gammapy_cnn.utils import ENERGY_RANGE, cpu_model, write_text_atomic

LIVETIME = 1800.0
FLUXES = (1.0, 0.1)  # Crab
ON_RADIUS = 0.2 * u.deg


def fit_power_law(dataset):
    model = SkyModel(spectral_model=PowerLawSpectralModel(index=2.5, amplitude="3e-11 cm-2 s-1 TeV-1",
                                                          reference="1 TeV"), name="source")
    dataset.models = [model]
    result = Fit().run([dataset])
    parameters = model.spectral_model.parameters
    return (result.success, parameters["index"].value, parameters["index"].error,
            parameters["amplitude"].value)


def evaluate(irf, n, seed, maker, flux):
    energy = MapAxis.from_energy_bounds(*ENERGY_RANGE, nbin=14, name="energy")
    template = SimulationTemplate(irf, energy_axis=energy)
    reference = template.reference_dataset(SkyCoord(0, 0, unit="deg"), 1 * u.s)
    binsz = template.binsz.to_value("deg")
    half = (template.npix - 1) / 2
    rng = np.random.default_rng(seed)
    fits = {"cnn": [], "true": []}
    for index in range(n):
        offset, angle = rng.uniform(0.5, 2.0), rng.uniform(0, 2 * np.pi)
        source = SourceParameters(offset * np.cos(angle), offset * np.sin(angle), flux, 2.5)
        params = MapParameters(0, 0.0, 0.0, LIVETIME, float(rng.uniform(0.9, 1.1)),
                               float(rng.uniform(-0.05, 0.05)), 0.0, 0.0, [source])
        sim = template.simulate(params, rng)
        full = scaled_reference(reference, LIVETIME * u.s, name=f"map{index}")
        geom = full.counts.geom
        full.counts = Map.from_geom(geom, data=sim.counts.astype(np.float32))
        full.mask_safe = Map.from_geom(geom, data=np.broadcast_to(template.mask, geom.data_shape).copy())
        backgrounds = {
            "cnn": maker.run(MapDataset(counts=full.counts.copy(), mask_safe=full.mask_safe.copy())).background,
            "true": Map.from_geom(geom, data=template.background(LIVETIME, params.background_norm,
                                                                  params.background_tilt)),
        }
        src = sim.sources[0]
        position = SkyCoord.from_pixel(src["x"], src["y"], geom.to_image().wcs, origin=0)
        assert abs(np.hypot(src["x"] - half, src["y"] - half) * binsz - offset) < 0.05
        for method, background in backgrounds.items():
            full.background = background
            spectrum = full.to_spectrum_dataset(CircleSkyRegion(position, ON_RADIUS), name=f"{method}{index}")
            fits[method].append(fit_power_law(spectrum))
    cnn, true = np.array(fits["cnn"]), np.array(fits["true"])
    ok = (cnn[:, 0] > 0) & (true[:, 0] > 0)
    d_index = cnn[ok, 1] - true[ok, 1]
    d_amplitude = cnn[ok, 3] / true[ok, 3] - 1
    return dict(irf=template.label, flux=flux, n=int(ok.sum()), index_bias=float(np.median(d_index)),
                index_scatter=float(np.std(d_index)), index_error=float(np.median(true[ok, 2])),
                amplitude_bias=float(np.median(d_amplitude)), amplitude_scatter=float(np.std(d_amplitude)),
                index_true=float(np.median(true[ok, 1])))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--seed", type=int, default=313131)
    parser.add_argument("--network", default="default")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    data = gammapy_data_dir()
    irfs = ["default-z20", str(data / "cta-caldb" / "Prod5-North-20deg-AverageAz-4LSTs09MSTs.180000s-v0.1.fits.gz"),
            str(data / "cta-1dc-irf" / "South_z20_50h_irf_file.fits.gz")]
    maker = CNNBackgroundMaker(args.network)
    start = time.time()
    rows = []
    for flux in FLUXES:
        for irf in irfs:
            rows.append(evaluate(irf, args.n, args.seed, maker, flux))
            print(rows[-1], flush=True)
    lines = ["# Spectra on simulations: CNN background against the true background", "",
             __doc__.split("\n\n", 2)[2].strip(), "",
             "| flux [Crab] | response | maps | index (true bkg, median) | index bias | index scatter "
             "| index stat. error | amplitude bias | amplitude scatter |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['flux']} | `{r['irf']}` | {r['n']} | {r['index_true']:.3f} | {r['index_bias']:+.3f} | "
                     f"{r['index_scatter']:.3f} | {r['index_error']:.3f} | {100 * r['amplitude_bias']:+.1f}% | "
                     f"{100 * r['amplitude_scatter']:.1f}% |")
    lines += ["", f"Command: `python benchmarks/spectra_simulated.py --n {args.n} --seed {args.seed} --network "
              f"{args.network} --output {args.output}`; machine: {cpu_model()}, 2 cores; "
              f"{(time.time() - start) / 60:.1f} min."]
    write_text_atomic(args.output, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
