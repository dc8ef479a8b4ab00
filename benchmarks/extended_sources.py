"""Flux preservation versus source size: does the background method eat an extended source?

Usage::

    python benchmarks/extended_sources.py --n 10 --output docs/results/extended_sources.md

One source of 1 Crab (index 2.5) per map, 0.8 deg from the pointing in a random
direction (as in the issue that asked for this page), background norm +-10%
and tilt +-0.05, for each morphology and size below, at 100 s and 1800 s, on
each response. The kept excess is sum(N - B) / sum(true signal) over the maps
of a cell, in an aperture of the source's size plus 0.3 deg (at least 0.4 deg)
around its true centre; 1 means the method keeps the whole source. Beside the
CNN background (counts only) are the *true* background (the reference: its
ratio differs from 1 by Poisson noise only) and gammapy's
``FoVBackgroundMaker`` (norm fitted) with the IRF background template and an
exclusion circle of the aperture's radius at the true position: the template
method with everything a template method can be given. The next column is
the same template with no knowledge of the source
(`~gammapy_cnn.templates.AutoExclusionFoVBackgroundMaker`: the exclusion mask found
in the counts), what ``gammapy-cnn find --background-network template`` uses.

The last columns are the `CNNSourceFinder` candidate nearest the source (within
its size plus 0.2 deg): found or not, distance from the true centre, and the
measured ``extension`` against the true Gaussian sigma (Gaussians only; for
disks and shells the `extension` column is the sigma of the Gaussian that
fits best: ~0.5 r for a disk, ~0.7 r for a thin shell).

The last section is the multi-run stack of the issue's real-data test: a shell of
1 deg outer radius (0.1 deg wide) observed in 4 runs of 1800 s, pointed 0.7 deg
from its centre in four directions (the H.E.S.S. wobble pattern), each run on a
map centred on its own pointing. The significance of the stacked excess in a
1.3 deg circle (``CashCountsStatistic`` over each method's background, summed over
the runs) is given for FoV-with-exclusion (a 1.3 deg exclusion circle) and for
the CNN background estimated run by run (`CNNBackgroundMaker` on the `Datasets`);
then the joint `CNNSourceFinder` on the runs' `Datasets` (the code path of
``gammapy-cnn find --stack``): the fraction of stacks with a candidate within
1 deg of the centre, the number of such candidates (1: one source, not
fragments) and the median distance of the nearest one from the centre. The
last four columns are the same for the runs' templates normalised outside one
exclusion mask found in the stack's counts (`AutoExclusionFoVBackgroundMaker`
on the `Datasets`), searched by the same finder on those backgrounds (the code
path of ``gammapy-cnn find --stack --background-network template``). The
rows of flux 0 have no shell: their sqrt(TS) is the methods' bias in the
circle, and a candidate there is false.
"""

import argparse
import time
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table
from gammapy.datasets import Datasets, MapDataset
from gammapy.makers import FoVBackgroundMaker
from gammapy.maps import Map
from gammapy.stats import CashCountsStatistic

from gammapy_cnn import CNNBackgroundMaker, CNNSourceFinder
from gammapy_cnn.example_data import gammapy_data_dir
from gammapy_cnn.simulation import MapParameters, SimulationTemplate, SourceParameters
from gammapy_cnn.simulation.irf import irf_label
from gammapy_cnn.templates import AutoExclusionFoVBackgroundMaker
from gammapy_cnn.utils import atomic_path, cpu_model, write_text_atomic

#: (morphology, extension, width): Gaussian sigma, disk radius, shell inner radius and width (deg).
SHAPES = (
    [("point", 0.0, 0.0)]
    + [("gaussian", s, 0.0) for s in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)]
    + [("disk", r, 0.0) for r in (0.1, 0.3, 0.5, 1.0)]
    # shells named by their outer radius, 0.1 deg wide
    + [("shell", r - 0.1, 0.1) for r in (0.3, 0.5, 1.0)]
)
LIVETIMES = (100.0, 1800.0)
OFFSET = 0.8  # deg
FLUX = 1.0  # Crab
#: The multi-run stack: shell (inner radius, width) in deg, runs, livetime per run [s],
#: wobble offset [deg], source fluxes [Crab] and the radius of the aperture [deg].
STACK_SHELL = (0.9, 0.1)
STACK_RUNS, STACK_LIVETIME, STACK_WOBBLE = 4, 1800.0, 0.7
STACK_FLUXES = (0.1, 0.2, 0.3, 0.5, 0.0)  # 0: no shell (the bias and false candidates); last, so the others' draws stay
STACK_APERTURE = 1.3


def outer_radius(morphology, extension, width):
    return {"point": 0.0, "gaussian": 2 * extension, "disk": extension, "shell": extension + width}[morphology]


def aperture_radius(morphology, extension, width):
    """Radius (deg) of the aperture the kept excess is measured in: the source's size plus 0.3 deg."""
    return max(outer_radius(morphology, extension, width) + 0.3, 0.4)


def source_map(template, livetime, morphology, extension, width, rng):
    """One map of this page: a `FLUX` Crab source (index 2.5) `OFFSET` deg from a random pointing in a
    random direction, background norm +-10% and tilt +-0.05. Returns its parameters and simulation."""
    angle = rng.uniform(0, 2 * np.pi)
    source = SourceParameters(OFFSET * np.cos(angle), OFFSET * np.sin(angle), FLUX, 2.5, extension, morphology, width)
    params = MapParameters(0, float(rng.uniform(0, 360)), float(rng.uniform(-50, 50)), livetime,
                           float(rng.uniform(0.9, 1.1)), float(rng.uniform(-0.05, 0.05)), 0.0, 0.0, [source])
    return params, template.simulate(params, rng)


def evaluate(irf, n, seed, background_network, finder_network, shapes=SHAPES, livetimes=LIVETIMES):
    template = SimulationTemplate(irf)
    maker = CNNBackgroundMaker(background_network)
    finder = CNNSourceFinder(finder_network, background_network=background_network)
    binsz = template.binsz.to_value("deg")
    yy, xx = np.mgrid[: template.npix, : template.npix]
    rng = np.random.default_rng(seed)
    rows = []
    for livetime in livetimes:
        for morphology, extension, width in shapes:
            size = outer_radius(morphology, extension, width)
            radius = aperture_radius(morphology, extension, width)
            excess = {"cnn": [], "true": [], "fov": [], "auto": []}
            signal, found, distance, measured = [], [], [], []
            for _ in range(n):
                params, sim = source_map(template, livetime, morphology, extension, width, rng)
                pointing = SkyCoord(params.pointing_ra, params.pointing_dec, unit="deg")
                geom = template.geom(pointing)
                counts = Map.from_geom(geom, data=sim.counts.astype(float))
                src = sim.sources[0]
                aperture = np.hypot(xx - src["x"], yy - src["y"]) * binsz < radius
                n_on = sim.counts.sum(axis=0)[aperture].sum()
                signal.append(sim.signal.sum(axis=0)[aperture].sum())
                truth = template.background(livetime, params.background_norm, params.background_tilt)
                excess["true"].append(n_on - truth.sum(axis=0)[aperture].sum())

                dataset = MapDataset(counts=counts, name="sim")
                cnn = maker.run(dataset).npred_background().data.sum(axis=0)
                excess["cnn"].append(n_on - cnn[aperture].sum())

                with_template = MapDataset(counts=counts.copy(), name="fov",
                                           background=Map.from_geom(geom, data=template.background(livetime)))
                auto = AutoExclusionFoVBackgroundMaker().run(with_template)
                excess["auto"].append(n_on - auto.npred_background().data.sum(axis=0)[aperture].sum())
                exclusion = Map.from_geom(geom.to_image(), data=~aperture)
                fov = FoVBackgroundMaker(method="scale", exclusion_mask=exclusion).run(with_template)
                excess["fov"].append(n_on - fov.npred_background().data.sum(axis=0)[aperture].sum())

                table = finder(dataset)
                if len(table):
                    d = np.hypot(np.asarray(table["x"]) - src["x"], np.asarray(table["y"]) - src["y"]) * binsz
                    best = int(np.argmin(d))
                    hit = d[best] <= size + 0.2
                else:
                    hit = False
                found.append(hit)
                distance.append(d[best] if hit else np.nan)
                measured.append(float(table["extension"][best]) if hit and "extension" in table.colnames
                                else np.nan)
            signal = np.array(signal)
            row = dict(irf=irf_label(irf), livetime=livetime, morphology=morphology,
                       extension=extension, width=width, size=size, aperture=radius, n=n,
                       signal=float(np.median(signal)))
            for name, values in excess.items():
                row[f"kept_{name}"] = float(np.sum(values) / signal.sum())
            row["found"] = float(np.mean(found))
            row["distance"] = float(np.nanmedian(distance)) if any(found) else np.nan
            row["extension_measured"] = float(np.nanmedian(measured)) if any(found) else np.nan
            rows.append(row)
            print(f"{row['irf']} {livetime:.0f}s {morphology} {extension:.2f}: kept cnn "
                  f"{row['kept_cnn']:.3f} true {row['kept_true']:.3f} fov {row['kept_fov']:.3f} "
                  f"template+auto {row['kept_auto']:.3f} "
                  f"found {row['found']:.2f} ext {row['extension_measured']:.3f}", flush=True)
    return rows


def wobble_stack(template, target, flux, rng):
    """The runs of one stack (`Datasets`, each on its own pointing-centred map, its
    pointing in ``meta_table``), their true background and IRF templates, and each
    run's aperture mask."""
    binsz = template.binsz.to_value("deg")
    half = (template.npix - 1) / 2
    yy, xx = np.mgrid[: template.npix, : template.npix]
    runs, truths, templates, apertures = [], [], [], []
    for k in range(STACK_RUNS):
        pointing = target.directional_offset_by((np.pi / 2 * k + np.pi / 4) * u.rad, STACK_WOBBLE * u.deg)
        geom = template.geom(pointing)
        px, py = (float(np.squeeze(v)) for v in geom.to_image().coord_to_pix(target))
        source = SourceParameters((px - half) * binsz, (py - half) * binsz, flux, 2.5, *STACK_SHELL[:1],
                                  "shell", STACK_SHELL[1])
        norm, tilt = float(rng.uniform(0.9, 1.1)), float(rng.uniform(-0.05, 0.05))
        params = MapParameters(k, pointing.ra.deg, pointing.dec.deg, STACK_LIVETIME, norm, tilt, 0.0, 0.0,
                               [source])
        sim = template.simulate(params, rng)
        run = MapDataset(counts=Map.from_geom(geom, data=sim.counts.astype(float)), name=f"run{k}")
        run.meta_table = Table({"OBS_ID": [k], "RA_PNT": [pointing.ra.deg] * u.deg,
                                "DEC_PNT": [pointing.dec.deg] * u.deg})
        runs.append(run)
        truths.append(template.background(STACK_LIVETIME, norm, tilt).sum(axis=0))
        templates.append(Map.from_geom(geom, data=template.background(STACK_LIVETIME)))
        apertures.append(np.hypot(xx - px, yy - py) * binsz < STACK_APERTURE)
    return Datasets(runs), truths, templates, apertures


def evaluate_stacks(irf, n, seed, background_network, finder_network, fluxes=STACK_FLUXES):
    """Rows of the multi-run stack section: per flux, ``n`` stacks of wobbled runs."""
    template = SimulationTemplate(irf)
    maker = CNNBackgroundMaker(background_network)
    finders = {"cnn": CNNSourceFinder(finder_network, background_network=background_network),
               "auto": CNNSourceFinder(finder_network, background_network=None)}
    rng = np.random.default_rng(seed)
    rows = []
    for flux in fluxes:
        sqrt_ts = {"cnn": [], "true": [], "fov": [], "auto": []}
        found, fragments, distance = ({name: [] for name in finders} for _ in range(3))
        for _ in range(n):
            target = SkyCoord(float(rng.uniform(0, 360)), float(rng.uniform(-50, 50)), unit="deg")
            runs, truths, templates, apertures = wobble_stack(template, target, flux, rng)
            n_on = sum(run.counts.data.sum(axis=0)[a].sum() for run, a in zip(runs, apertures))
            background = {"true": sum(t[a].sum() for t, a in zip(truths, apertures)), "cnn": 0.0, "fov": 0.0}
            for run, estimate, bkg, aperture in zip(runs, maker.run(runs), templates, apertures):
                background["cnn"] += estimate.npred_background().data.sum(axis=0)[aperture].sum()
                exclusion = Map.from_geom(bkg.geom.to_image(), data=~aperture)
                fov = FoVBackgroundMaker(method="scale", exclusion_mask=exclusion).run(
                    MapDataset(counts=run.counts.copy(), background=bkg, name="fov"))
                background["fov"] += fov.npred_background().data.sum(axis=0)[aperture].sum()
            with_templates = Datasets([run.copy(name=run.name) for run in runs])
            for with_template, bkg in zip(with_templates, templates):
                with_template.background = bkg
            auto = AutoExclusionFoVBackgroundMaker().run(with_templates)
            background["auto"] = sum(estimate.npred_background().data.sum(axis=0)[aperture].sum()
                                     for estimate, aperture in zip(auto, apertures))
            for name, mu in background.items():
                sqrt_ts[name].append(float(CashCountsStatistic(n_on=n_on, mu_bkg=mu).sqrt_ts))
            for name, datasets in (("cnn", runs), ("auto", auto)):
                table = finders[name](datasets)
                separation = target.separation(SkyCoord(table["RA"], table["DEC"])).deg
                near = separation[separation < 1]
                found[name].append(len(near) > 0)
                fragments[name].append(len(near))
                distance[name].append(float(near.min()) if len(near) else np.nan)
        row = dict(irf=irf_label(irf), flux=flux, n=n)
        for name in finders:
            suffix = "" if name == "cnn" else f"_{name}"
            row.update({f"found{suffix}": float(np.mean(found[name])),
                        f"candidates{suffix}": float(np.median(fragments[name])),
                        f"distance{suffix}": float(np.nanmedian(distance[name])) if any(found[name]) else np.nan})
        row.update({f"sqrt_ts_{name}": float(np.median(v)) for name, v in sqrt_ts.items()})
        rows.append(row)
        print(f"stack {row['irf']} {flux} Crab: sqrt(TS) cnn {row['sqrt_ts_cnn']:.1f} true "
              f"{row['sqrt_ts_true']:.1f} fov {row['sqrt_ts_fov']:.1f} template+auto {row['sqrt_ts_auto']:.1f}; "
              f"found {row['found']:.2f} / {row['found_auto']:.2f} at {row['distance']:.3f} / "
              f"{row['distance_auto']:.3f} deg", flush=True)
    return rows


def stack_markdown(table):
    lines = [f"## Multi-run stack: 1 deg shell, {STACK_RUNS} x {STACK_LIVETIME:.0f} s, wobble "
             f"{STACK_WOBBLE} deg ({table['n'][0]} stacks per row)", "",
             "| response | flux [Crab] | sqrt(TS) true background | FoV + exclusion | CNN, run by run "
             "| found | candidates within 1 deg | distance [deg] | template + auto exclusion | found "
             "| candidates within 1 deg | distance [deg] |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in table:
        lines.append(f"| `{row['irf']}` | {row['flux']:.2f} | {row['sqrt_ts_true']:.1f} | "
                     f"{row['sqrt_ts_fov']:.1f} | {row['sqrt_ts_cnn']:.1f} | {row['found']:.2f} | "
                     f"{row['candidates']:.0f} | {row['distance']:.3f} | {row['sqrt_ts_auto']:.1f} | "
                     f"{row['found_auto']:.2f} | {row['candidates_auto']:.0f} | {row['distance_auto']:.3f} |")
    return "\n".join(lines + [""])


def markdown(table):
    lines = []
    for irf in dict.fromkeys(table["irf"]):
        for livetime in sorted(set(table["livetime"])):
            part = table[(table["irf"] == irf) & (table["livetime"] == livetime)]
            if not len(part):
                continue
            lines += [f"## `{irf}`, {livetime:.0f} s ({part['n'][0]} maps per row)", "",
                      "| source | size [deg] | signal counts | CNN | true background | FoV + exclusion "
                      "| template + auto exclusion | found | distance [deg] | extension [deg] |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for row in part:
                name = {"point": "point", "gaussian": f"Gaussian sigma {row['extension']:.2f}",
                        "disk": f"disk r {row['extension']:.2f}",
                        "shell": f"shell r {row['size']:.2f} (width {row['width']:.2f})"}[row["morphology"]]
                lines.append(
                    f"| {name} | {row['size']:.2f} | {row['signal']:.0f} | {row['kept_cnn']:.3f} | "
                    f"{row['kept_true']:.3f} | {row['kept_fov']:.3f} | {row['kept_auto']:.3f} | {row['found']:.2f} | "
                    f"{row['distance']:.3f} | {row['extension_measured']:.3f} |")
            lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--irf", nargs="+", default=None,
                        help="responses (default: default-z20 and, from $GAMMAPY_DATA, prod5 and CTA 1DC)")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--seed", type=int, default=616161)
    parser.add_argument("--background-network", default="default")
    parser.add_argument("--finder-network", default="default")
    parser.add_argument("--quick", action="store_true", help="1800 s only, Gaussians 0.3 and 0.5 deg, shells")
    parser.add_argument("--n-stacks", type=int, default=5, help="stacks per flux and response (0: none)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    irfs = args.irf
    if irfs is None:
        irfs = ["default-z20"]
        try:
            data = gammapy_data_dir()
            irfs += [str(data / "cta-caldb" / "Prod5-North-20deg-AverageAz-4LSTs09MSTs.180000s-v0.1.fits.gz"),
                     str(data / "cta-1dc-irf" / "South_z20_50h_irf_file.fits.gz")]
        except FileNotFoundError as error:
            print(f"only the embedded response: {error}")
    start = time.time()
    rows = []
    for irf in irfs:
        if args.quick:
            shapes = [s for s in SHAPES if s[0] == "shell" or s[1] in (0.3, 0.5) and s[0] == "gaussian"]
            rows += evaluate(irf, args.n, args.seed, args.background_network, args.finder_network,
                             shapes, (1800.0,))
        else:
            rows += evaluate(irf, args.n, args.seed, args.background_network, args.finder_network)
    stack_rows = []
    if args.n_stacks:
        for irf in irfs:
            stack_rows += evaluate_stacks(irf, args.n_stacks, args.seed + 1, args.background_network,
                                          args.finder_network)
    table = Table(rows=rows)
    with atomic_path(args.output.with_suffix(".ecsv")) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    stacks = Table(rows=stack_rows) if stack_rows else None
    if stacks is not None:
        with atomic_path(args.output.with_name(args.output.stem + "_stacks.ecsv")) as tmp:
            stacks.write(tmp, format="ascii.ecsv", overwrite=True)
    command = (f"python benchmarks/extended_sources.py --n {args.n} --seed {args.seed} "
               f"--background-network {args.background_network} --finder-network {args.finder_network} "
               f"--n-stacks {args.n_stacks} --output {args.output}")
    parts = ["# Extended sources: kept excess versus size", "", __doc__.split("\n\n", 2)[2].strip(), "",
             markdown(table), stack_markdown(stacks) if stacks is not None else "",
             f"Command: `{command}` (responses: {', '.join(irf_label(i) for i in irfs)}); machine: "
             f"{cpu_model()}, 2 cores, shared; {(time.time() - start) / 60:.1f} min. "
             f"Table: `{args.output.with_suffix('.ecsv').name}`."]
    write_text_atomic(args.output, "\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
