"""A 1 deg shell injected into real H.E.S.S. runs: extended emission over a real instrument's background.

The issue's real-data case is a bright supernova-remnant shell of 1 deg in
twelve H.E.S.S. runs, which ``../shared`` does not hold. Its nearest
reproducible stand-in: the five DR1 runs of 3C 273, a field with no
detected source wobbled 0.5 deg around it, with the photons of a shell
(inner radius 0.9 deg, 0.1 deg wide, centred on the wobble target, power
law of index 2.3) added to the real events. The shell's photons are drawn
from each run's own IRFs (gammapy's `~gammapy.makers.MapDatasetMaker`:
exposure, PSF and energy dispersion, 0.02 deg pixels): Poisson counts per
pixel and reconstructed-energy bin, placed uniformly inside their bin, with
the arrival times of randomly chosen real events. Everything else is the
real data: background, acceptance, zenith angles, dead pixels.

Per flux (the shell's differential flux at 1 TeV, in units of the Crab's,
3.45e-11 cm-2 s-1 TeV-1), ``--n`` independent draws of the shell photons:

- **sqrt(TS) in the circle of 1.3 deg** around the target, summed over the
  runs (Cash, counts against each method's background), and the **kept
  excess**: the method's excess there (counts minus background) less its
  excess on the real runs alone, over the injected counts (so a method's
  own bias on this field, which the flux-0 row shows, is not counted):
  the CNN background from the counts alone, each run on its own pointing
  (`~gammapy_cnn.CNNBackgroundMaker` on `~gammapy.datasets.Datasets`); each
  run's IRF background normalised outside an exclusion mask found on the
  runs' stack (`~gammapy_cnn.templates.AutoExclusionFoVBackgroundMaker`);
  and gammapy's ``FoVBackgroundMaker`` with the circle excluded (the
  template method told where the source is). The single-run columns give
  the same per run (median over the runs and draws).
- **The searches** ``gammapy-cnn find --stack`` does, counts only and with
  ``--background-network template`` (`~gammapy_cnn.realtime.WindowSearch`,
  the cuts of ``hess_dr1.md``: each run's safe threshold, at least 0.3 TeV,
  to 100 TeV; 2.5 deg from each pointing): found when a candidate lies
  within 1 deg of the centre, the nearest one's distance from it, and the
  other candidates (farther than 1.3 deg).

Flux 0 is the field as it is: the methods' bias in the circle, and any
candidate is false.

Usage::

    python benchmarks/injected_shell_hess.py --output docs/results/injected_shell_hess.md
"""

import argparse
import os
import time
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import vstack
from gammapy.data import DataStore, EventList
from gammapy.datasets import Datasets, MapDataset
from gammapy.makers import FoVBackgroundMaker, MapDatasetMaker
from gammapy.maps import Map, MapAxis, WcsGeom
from gammapy.modeling.models import PowerLawSpectralModel, ShellSpatialModel, SkyModel
from gammapy.stats import CashCountsStatistic

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from hess_dr1 import ENERGY_MAX, OFFSET_MAX, energy_thresholds  # noqa: E402
from template_hess import search  # noqa: E402  (find and find --background-network template on runs)

from gammapy_cnn import CNNBackgroundMaker  # noqa: E402
from gammapy_cnn.data import counts_dataset, counts_geom, read_observations  # noqa: E402
from gammapy_cnn.example_data import find_hess_dr1  # noqa: E402
from gammapy_cnn.templates import AutoExclusionFoVBackgroundMaker, background_template  # noqa: E402
from gammapy_cnn.utils import cpu_model, write_text_atomic  # noqa: E402

FIELD = "3C 273"
TARGET = SkyCoord(187.2779, 2.0524, unit="deg")  # the runs' wobble centre (3C 273; no source in DR1)
SHELL_RADIUS, SHELL_WIDTH = 0.9 * u.deg, 0.1 * u.deg
INDEX = 2.3
CRAB_AT_1TEV = 3.45e-11 * u.Unit("cm-2 s-1 TeV-1")  # H.E.S.S. (2006) power law
FLUXES = (0.0, 0.5, 1.0, 1.5, 2.0)
APERTURE = 1.3 * u.deg
FOUND_RADIUS = 1.0 * u.deg  # a candidate this close to the centre finds the shell (on its rim is 0.95 deg)
METHODS = ("cnn", "template", "fov")


def shell_model(flux):
    spatial = ShellSpatialModel(lon_0=TARGET.ra, lat_0=TARGET.dec, radius=SHELL_RADIUS, width=SHELL_WIDTH,
                                frame="icrs")
    spectral = PowerLawSpectralModel(index=INDEX, amplitude=flux * CRAB_AT_1TEV, reference=1 * u.TeV)
    return SkyModel(spatial_model=spatial, spectral_model=spectral, name="shell")


def shell_events(observation, flux, rng):
    """The shell's photons in one run: an `~astropy.table.Table` with the run's event columns."""
    energy = MapAxis.from_energy_bounds(0.2, 100, 20, unit="TeV", name="energy")
    geom = WcsGeom.create(skydir=observation.get_pointing_icrs(observation.tmid), width=5 * u.deg,
                          binsz=0.02 * u.deg, frame="icrs", axes=[energy])
    true = MapAxis.from_energy_bounds(0.1, 200, 30, unit="TeV", name="energy_true")
    empty = MapDataset.create(geom, energy_axis_true=true, binsz_irf=0.2 * u.deg, name=f"shell_{observation.obs_id}")
    dataset = MapDatasetMaker(selection=["exposure", "psf", "edisp"]).run(empty, observation)
    dataset.models = [shell_model(flux)]
    counts = rng.poisson(np.clip(dataset.npred_signal().data, 0, None))
    ie, iy, ix = np.nonzero(counts)
    repeat = counts[ie, iy, ix]
    ie, iy, ix = (np.repeat(i, repeat) for i in (ie, iy, ix))
    lon, lat = geom.to_image().pix_to_coord((ix + rng.uniform(-0.5, 0.5, len(ix)),
                                             iy + rng.uniform(-0.5, 0.5, len(iy))))
    edges = np.log(energy.edges.to_value("TeV"))
    log_energy = edges[ie] + rng.uniform(0, 1, len(ie)) * (edges[ie + 1] - edges[ie])
    real = observation.events.table
    table = real[rng.integers(0, len(real), len(ie))]  # real arrival times (within the GTIs)
    # in place: the columns keep the run's units and types
    table["RA"][:] = lon
    table["DEC"][:] = lat
    table["ENERGY"][:] = (np.exp(log_energy) * u.TeV).to_value(table["ENERGY"].unit)
    if "EVENT_ID" in table.colnames:
        table["EVENT_ID"] = np.max(real["EVENT_ID"]) + 1 + np.arange(len(table))
    return table


def with_shell(observations, flux, rng):
    """Copies of the runs whose events include the shell's photons (the runs themselves at flux 0)."""
    if flux == 0:
        return list(observations)
    runs = []
    for observation in observations:
        real = observation.events.table
        table = vstack([real, shell_events(observation, flux, rng)], metadata_conflicts="silent")
        table.meta = real.meta
        table.sort("TIME")
        runs.append(observation.copy(in_memory=True, events=EventList(table)))
    return runs


def run_datasets(observations, thresholds):
    """One counts-only dataset per run, on its own pointing-centred 5 x 5 deg map (the ``find`` cuts)."""
    datasets = []
    for observation in observations:
        cut = thresholds[int(observation.obs_id)]
        axis = MapAxis.from_energy_edges(u.Quantity([cut, ENERGY_MAX]).to("TeV"), name="energy")
        geom = counts_geom(observation.get_pointing_icrs(observation.tmid), energy_axis=axis)
        datasets.append(counts_dataset(observation, geom, energy_min=cut, energy_max=ENERGY_MAX,
                                       offset_max=OFFSET_MAX, name=f"obs_{observation.obs_id}"))
    return Datasets(datasets)


def aperture_sums(observations, thresholds):
    """Per run: counts and each method's background in the circle."""
    runs = run_datasets(observations, thresholds)
    cnn = CNNBackgroundMaker().run(runs)
    with_templates = Datasets([run.copy(name=run.name) for run in runs])
    for dataset, observation in zip(with_templates, observations):
        dataset.background = background_template(observation, dataset.counts.geom)
    template = AutoExclusionFoVBackgroundMaker().run(with_templates)
    sums = []
    for run, estimate, auto, with_template in zip(runs, cnn, template, with_templates):
        image = run.counts.geom.to_image()
        inside = image.separation(TARGET) < APERTURE
        mask = np.asarray(run.mask_safe.data, bool).any(axis=0) if run.mask_safe is not None else True
        aperture = inside & mask
        exclusion = Map.from_geom(image, data=~inside)
        fov = FoVBackgroundMaker(method="scale", exclusion_mask=exclusion).run(with_template)
        background = {name: float(ds.npred_background().data.sum(axis=0)[aperture].sum())
                      for name, ds in (("cnn", estimate), ("template", auto), ("fov", fov))}
        sums.append(dict(n_on=float(run.counts.data.sum(axis=0)[aperture].sum()), **background))
    return sums


def sqrt_ts(n_on, background):
    return float(CashCountsStatistic(n_on=n_on, mu_bkg=background).sqrt_ts)


def describe(table):
    """(found, distance of the nearest candidate in deg, its extension, other candidates)."""
    if not len(table):
        return False, np.nan, np.nan, 0
    separation = TARGET.separation(SkyCoord(table["RA"], table["DEC"], unit="deg")).deg
    best = int(np.argmin(separation))
    found = separation[best] < FOUND_RADIUS.to_value("deg")
    return (bool(found), float(separation[best]) if found else np.nan,
            float(table["extension"][best]) if found else np.nan,
            int(np.sum(separation > APERTURE.to_value("deg"))))


def evaluate(observations, thresholds, flux, n, rng, real):
    """Rows (stack, single runs) of one flux, each over ``n`` draws of the shell's photons;
    ``real``: `aperture_sums` of the runs as they are."""
    draws = 1 if flux == 0 else n
    stack = {key: [] for key in ("sqrt_ts", "kept", "injected")}
    stack_search = {"cnn": [], "template": []}
    single_sqrt_ts, single_kept, single_found = ({m: [] for m in METHODS} for _ in range(3))
    for _ in range(draws):
        runs = with_shell(observations, flux, rng)
        sums = aperture_sums(runs, thresholds)
        for s, r in zip(sums, real):
            s["injected"] = s["n_on"] - r["n_on"]
            for m in METHODS:
                s[f"kept_{m}"] = (s["n_on"] - s[m]) - (r["n_on"] - r[m])
        injected = sum(s["injected"] for s in sums)
        stack["injected"].append(injected)
        stack["sqrt_ts"].append({m: sqrt_ts(sum(s["n_on"] for s in sums), sum(s[m] for s in sums))
                                 for m in METHODS})
        stack["kept"].append({m: sum(s[f"kept_{m}"] for s in sums) / injected if injected > 0 else np.nan
                              for m in METHODS})
        for s in sums:
            for m in METHODS:
                single_sqrt_ts[m].append(sqrt_ts(s["n_on"], s[m]))
                single_kept[m].append(s[f"kept_{m}"] / s["injected"] if s["injected"] > 0 else np.nan)
        for name in stack_search:
            stack_search[name].append(describe(search(runs, thresholds, name == "template")))
            for run in runs:
                single_found[name].append(describe(search([run], thresholds, name == "template")))
    row = dict(flux=flux, draws=draws, injected=float(np.median(stack["injected"])))
    for m in METHODS:
        row[f"sqrt_ts_{m}"] = float(np.median([d[m] for d in stack["sqrt_ts"]]))
        row[f"kept_{m}"] = float(np.median([d[m] for d in stack["kept"]])) if flux else np.nan
        row[f"run_sqrt_ts_{m}"] = float(np.median(single_sqrt_ts[m]))
        row[f"run_kept_{m}"] = float(np.nanmedian(single_kept[m])) if flux else np.nan
    for name, results in stack_search.items():
        found = [r[0] for r in results]
        row[f"found_{name}"] = float(np.mean(found))
        row[f"distance_{name}"] = float(np.nanmedian([r[1] for r in results])) if any(found) else np.nan
        row[f"extension_{name}"] = float(np.nanmedian([r[2] for r in results])) if any(found) else np.nan
        row[f"other_{name}"] = int(sum(r[3] for r in results))
        row[f"run_found_{name}"] = float(np.mean([r[0] for r in single_found[name]]))
        row[f"run_other_{name}"] = int(sum(r[3] for r in single_found[name]))
    print(row, flush=True)
    return row


def markdown(rows, n_runs, command, minutes):
    lines = [f"# A 1 deg shell injected into the H.E.S.S. DR1 runs of {FIELD}", "", f"`{command}`", "",
             __doc__.split("\n\n", 1)[1].split("Usage::")[0].strip(), "",
             f"## The stack of the {n_runs} runs", "",
             "| flux [Crab at 1 TeV] | draws | injected counts in the circle (median) | sqrt(TS): CNN, counts only "
             "| template + auto exclusion | FoV + true exclusion | kept excess: CNN | template + auto | FoV + true "
             "| `find --stack`: found, distance [deg], extension [deg], others | with `--background-network "
             "template` |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def found(row, name):
        if not row[f"found_{name}"]:
            return f"0%, -, -, {row[f'other_{name}']}"
        return (f"{100 * row[f'found_{name}']:.0f}%, {row[f'distance_{name}']:.3f}, "
                f"{row[f'extension_{name}']:.2f}, {row[f'other_{name}']}")

    for row in rows:
        kept = " | ".join("-" if not row["flux"] else f"{row[f'kept_{m}']:.2f}" for m in METHODS)
        lines.append(f"| {row['flux']:g} | {row['draws']} | {row['injected']:.0f} | {row['sqrt_ts_cnn']:.1f} | "
                     f"{row['sqrt_ts_template']:.1f} | {row['sqrt_ts_fov']:.1f} | {kept} | {found(row, 'cnn')} | "
                     f"{found(row, 'template')} |")
    lines += ["", "## Single runs (medians over runs and draws)", "",
              "| flux [Crab at 1 TeV] | sqrt(TS): CNN | template + auto | FoV + true exclusion | kept excess: CNN "
              "| template + auto | FoV + true | `find`: found (CNN / template) | others (CNN / template) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        kept = " | ".join("-" if not row["flux"] else f"{row[f'run_kept_{m}']:.2f}" for m in METHODS)
        lines.append(f"| {row['flux']:g} | {row['run_sqrt_ts_cnn']:.1f} | {row['run_sqrt_ts_template']:.1f} | "
                     f"{row['run_sqrt_ts_fov']:.1f} | {kept} | {100 * row['run_found_cnn']:.0f}% / "
                     f"{100 * row['run_found_template']:.0f}% | {row['run_other_cnn']} / {row['run_other_template']} |")
    lines += ["", f"Machine: {cpu_model()}; {minutes:.1f} min.", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=find_hess_dr1())
    parser.add_argument("--n", type=int, default=3, help="draws of the shell's photons per flux")
    parser.add_argument("--seed", type=int, default=171300)
    parser.add_argument("--fluxes", type=float, nargs="+", default=FLUXES)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    if args.data is None:
        parser.error("no H.E.S.S. DL3 DR1 data: set $GAMMAPY_DATA or give --data")
    start = time.time()
    store = DataStore.from_dir(args.data)
    thresholds = energy_thresholds(store.obs_table)
    ids = [int(r["OBS_ID"]) for r in store.obs_table if str(r["OBJECT"]).strip() == FIELD]
    observations = list(read_observations(args.data, ids))
    rng = np.random.default_rng(args.seed)
    real = aperture_sums(observations, thresholds)
    rows = [evaluate(observations, thresholds, flux, args.n, rng, real) for flux in args.fluxes]
    fluxes = " ".join(f"{f:g}" for f in args.fluxes)
    command = (f"python benchmarks/injected_shell_hess.py --n {args.n} --seed {args.seed} --fluxes {fluxes} "
               f"--output {args.output}")
    write_text_atomic(args.output, markdown(rows, len(ids), command, (time.time() - start) / 60))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
