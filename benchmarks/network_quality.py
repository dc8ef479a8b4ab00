"""Quality and speed of the shipped networks on held-out simulations (model-card metrics).

Usage::

    python benchmarks/network_quality.py --irf default-z20 --n 150 \\
        --output docs/results/networks_default-z20.json --update-cards

Simulates a held-out set (seed disjoint from training) with controlled fluxes
(0, 0.1, 0.3, 1, 3 Crab) and exposures (10 s, 100 s, 1800 s), one source per
field or none, and measures for each cleaner network (a shipped name or a
``.keras`` file, e.g. a previous version to compare with):

- total background in the mask / true expectation (median, per flux class);
- aperture (0.2 deg) excess / true signal - 1 (median, per flux and exposure);
- empty fields: signed Cash significance and (N - B) / sqrt(B) in random 0.1 deg
  apertures (mean, std), also with the true background as the reference;

and for each finder network: 68%/95% containment of the matched candidate's error,
completeness per flux and exposure, false candidates per field; plus wall time.
Comparisons with gammapy's own methods are in ``gammapy-cnn benchmark``.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from gammapy.datasets import MapDataset
from gammapy.maps import Map
from gammapy.stats import CashCountsStatistic

from gammapy_cnn import CNNBackgroundMaker, CNNSourceFinder
from gammapy_cnn.networks import ORIGINAL, canonical_name
from gammapy_cnn.simulation import MapParameters, SimulationTemplate, SourceParameters
from gammapy_cnn.utils import cpu_model, write_text_atomic

FLUXES = [0.0, 0.1, 0.3, 1.0, 3.0]
LIVETIMES = [10.0, 100.0, 1800.0]
APERTURE = 0.2  # deg
MATCH = 0.3  # deg


def held_out_maps(irf, n, seed):
    template = SimulationTemplate(irf)
    rng = np.random.default_rng([seed, 99])
    for i in range(n):
        flux = FLUXES[i % len(FLUXES)]
        livetime = LIVETIMES[(i // len(FLUXES)) % len(LIVETIMES)]
        off, ang = rng.uniform(0, 2.0), rng.uniform(0, 2 * np.pi)
        sources = [SourceParameters(off * np.cos(ang), off * np.sin(ang), flux, 2.5, 0.0)] if flux else []
        params = MapParameters(0, float(rng.uniform(0, 360)), float(rng.uniform(-50, 50)), livetime,
                               float(rng.uniform(0.85, 1.15)), float(rng.uniform(-0.1, 0.1)), 0.0, 0.0,
                               sources)
        sim = template.simulate(params, rng)
        geom = template.geom(SkyCoord(params.pointing_ra, params.pointing_dec, unit="deg"))
        dataset = MapDataset(counts=Map.from_geom(geom, data=sim.counts.astype(float)), name=f"m{i}")
        truth = dict(flux=flux, livetime=livetime, sources=sim.sources, signal=sim.signal.sum(axis=0),
                     background=template.background(livetime, params.background_norm,
                                                    params.background_tilt).sum(axis=0))
        yield dataset, truth


def paired_cleaner(finder):
    """The cleaner a finder was trained and calibrated with: the original's for the
    original, ``cleaner_X.keras`` beside a ``finder_X.keras`` file, else the default."""
    if canonical_name(finder) == ORIGINAL:
        return finder
    path = Path(finder)
    sibling = path.with_name(path.name.replace("finder_", "cleaner_", 1))
    return str(sibling) if path.suffix == ".keras" and sibling.is_file() else "default"


def signed_cash(n_on, mu_bkg):
    """Cash significance of n_on over a known background (gammapy's sqrt_ts is signed)."""
    return CashCountsStatistic(n_on=n_on, mu_bkg=np.maximum(mu_bkg, 1e-9)).sqrt_ts


def evaluate(irf, n, seed, cleaners, finders):
    maps = list(held_out_maps(irf, n, seed))
    yy, xx = np.mgrid[:200, :200]
    rng = np.random.default_rng(seed)
    # the same 20 random 0.1 deg apertures of each empty map for every background
    apertures = [[np.hypot(xx - cx, yy - cy) * 0.025 < 0.1 for cx, cy in rng.uniform(20, 180, (20, 2))]
                 if not truth["sources"] else [] for _, truth in maps]
    results = {"irf": str(irf), "n_maps": n, "seed": seed, "cleaner": {}, "finder": {}}
    backgrounds = {name: CNNBackgroundMaker(network=name) for name in cleaners}
    backgrounds["true background"] = None  # the reference: what the statistics give with the truth
    for name, maker in backgrounds.items():
        if maker is not None:
            maker.run(maps[0][0])
        ratio, excess, cash, simple, times = {}, {}, {}, {}, []
        for (dataset, truth), empty_apertures in zip(maps, apertures):
            t0 = time.perf_counter()
            bkg = maker.run(dataset).background.data.sum(axis=0) if maker else truth["background"]
            times.append(time.perf_counter() - t0)
            counts = dataset.counts.data.sum(axis=0)
            key = str(truth["flux"])
            ratio.setdefault(key, []).append(bkg.sum() / truth["background"].sum())
            for src in truth["sources"]:
                ap = np.hypot(xx - src["x"], yy - src["y"]) * 0.025 < APERTURE
                k = f"{truth['flux']}|{truth['livetime']:.0f}"
                excess.setdefault(k, []).append((counts[ap] - bkg[ap]).sum() / truth["signal"][ap].sum() - 1)
            for ap in empty_apertures:
                n_on, mu = counts[ap].sum(), bkg[ap].sum()
                cash.setdefault(f"{truth['livetime']:.0f}", []).append(signed_cash(n_on, mu))
                simple.setdefault(f"{truth['livetime']:.0f}", []).append((n_on - mu) / np.sqrt(mu))
        entry = dict(
            background_ratio_median={k: float(np.median(v)) for k, v in ratio.items()},
            aperture_excess_bias_median={k: float(np.median(v)) for k, v in excess.items()},
            # Per livetime. At 10 s an aperture holds ~0.2 counts: the Cash significance is
            # then not Gaussian even with the true background (mean ~ -0.27), while
            # (N - B) / sqrt(B) keeps mean 0 and std 1 for an unbiased B at any counts.
            empty_field_significance_mean={k: float(np.mean(v)) for k, v in cash.items()},
            empty_field_significance_std={k: float(np.std(v)) for k, v in cash.items()},
            empty_field_simple_significance_mean={k: float(np.mean(v)) for k, v in simple.items()},
            empty_field_simple_significance_std={k: float(np.std(v)) for k, v in simple.items()},
        )
        if maker is None:
            results["reference"] = entry
        else:
            results["cleaner"][name] = dict(entry, run_ms_p50=float(1e3 * np.median(times)))
    for name in finders:
        original = canonical_name(name) == ORIGINAL
        finder = CNNSourceFinder(network=name, background_network=paired_cleaner(name))
        finder.run(maps[0][0])
        errors, found, false, times = {}, {}, [], []
        for dataset, truth in maps:
            t0 = time.perf_counter()
            table = finder.run(dataset)
            times.append(time.perf_counter() - t0)
            cand = SkyCoord(table["RA"], table["DEC"], unit="deg") if len(table) else None
            matched = np.zeros(len(table), bool)
            for src in truth["sources"]:
                k = f"{truth['flux']}|{truth['livetime']:.0f}"
                hit = False
                if cand is not None:
                    sep = cand.separation(SkyCoord(src["ra"], src["dec"], unit="deg")).deg
                    j = int(np.argmin(sep))
                    if sep[j] < MATCH:
                        hit, matched[j] = True, True
                        errors.setdefault(k, []).append(float(sep[j]))
                found.setdefault(k, []).append(hit)
            false.append(0 if original else int((~matched).sum()))
        results["finder"][name] = dict(
            containment_68_deg={k: float(np.quantile(v, 0.68)) for k, v in errors.items() if len(v) >= 5},
            containment_95_deg={k: float(np.quantile(v, 0.95)) for k, v in errors.items() if len(v) >= 5},
            completeness={k: float(np.mean(v)) for k, v in found.items()},
            false_per_field=float(np.mean(false)),
            run_ms_p50=float(1e3 * np.median(times)),
        )
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--irf", default="default-z20")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=424242)
    parser.add_argument("--cleaners", nargs="+", default=["default", ORIGINAL])
    parser.add_argument("--finders", nargs="+", default=["default", ORIGINAL])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--update-cards", action="store_true",
                        help="Store the metrics in the shipped networks' model cards.")
    args = parser.parse_args()
    results = evaluate(args.irf, args.n, args.seed, args.cleaners, args.finders)
    results["machine"] = f"{cpu_model()}, {os.cpu_count()} cores"
    options = [f"--{k.replace('_', '-')}" + ("" if isinstance(v, bool) else
               f" {' '.join(map(str, v)) if isinstance(v, list) else v}")
               for k, v in vars(args).items() if v is not False]
    results["command"] = "python benchmarks/network_quality.py " + " ".join(options)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.output, json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    if args.update_cards:
        update_cards(results)


def update_cards(results):
    """Add this run's metrics, keyed by IRF, to the shipped networks' model cards (JSON and Markdown)."""
    from gammapy_cnn.networks import read_card, weights_dir
    from gammapy_cnn.networks.cards import write_all
    from gammapy_cnn.training import write_card

    for kind in ("cleaner", "finder"):
        for name, metrics in results[kind].items():
            path = weights_dir() / f"{kind}_{canonical_name(name)}.keras"  # records may say "seed"
            if not path.exists():
                continue
            card = read_card(path)
            card.setdefault("metrics", {})[results["irf"]] = dict(
                metrics, n_maps=results["n_maps"], seed=results["seed"], command=results["command"],
                machine=results["machine"])
            write_card(path, card)
    write_all()  # the human-readable cards (NAME.md) follow their JSON


if __name__ == "__main__":
    main()
