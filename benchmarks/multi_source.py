"""Several sources in one field: fraction found by the finder (issue goal: >= 95% above 0.3 Crab).

Usage::

    python benchmarks/multi_source.py --n 100 --output docs/results/multi_source.md

Fields of 100 s with 2 or 3 point sources of 0.3-3 Crab (log-uniform), 0.3 deg
apart or more, offsets up to 2 deg, embedded IRF; a source is found when a
candidate lies within 0.1 deg. Also reports the fraction for pairs closer than
0.5 deg and the false candidates per field.
"""

import argparse
import time
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from gammapy.datasets import MapDataset
from gammapy.maps import Map

from gammapy_cnn import CNNSourceFinder
from gammapy_cnn.simulation import Scenario, SimulationTemplate
from gammapy_cnn.utils import write_text_atomic

SCENARIO = {
    "irf": "default-z20", "livetime": "100 s", "n_sources": {"dist": "integer", "min": 2, "max": 3},
    "source_offset": {"dist": "uniform", "min": 0, "max": 2.0},
    "source_flux": {"dist": "log-uniform", "min": 0.3, "max": 3}, "source_index": 2.5,
    "source_extension": 0, "min_separation": "0.3 deg",
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=5151)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    scenario = Scenario.from_dict(SCENARIO)
    template = SimulationTemplate("default-z20")
    finder = CNNSourceFinder()
    rng = np.random.default_rng(args.seed)
    found, close_found, false = [], [], []
    for _ in range(args.n):
        params = scenario.sample(rng)
        sim = template.simulate(params, rng)
        geom = template.geom(SkyCoord(params.pointing_ra, params.pointing_dec, unit="deg"))
        table = finder.run(MapDataset(counts=Map.from_geom(geom, data=sim.counts.astype(float))))
        truth = SkyCoord([s["ra"] for s in sim.sources], [s["dec"] for s in sim.sources], unit="deg")
        if len(table):
            sep = SkyCoord(table["RA"], table["DEC"], unit="deg")[:, None].separation(truth[None, :]).deg
        else:
            sep = np.full((0, len(truth)), np.inf)
        hit = (sep < 0.1).any(axis=0)
        found.extend(hit)
        pair_sep = truth[:, None].separation(truth[None, :]).deg + np.eye(len(truth)) * 99
        close_found.extend(hit[pair_sep.min(axis=1) < 0.5])
        false.append(int(((sep < 0.1).sum(axis=1) == 0).sum()))
    text = "\n".join([
        "# Several sources in one field",
        "",
        f"{args.n} fields of 100 s, 2-3 point sources of 0.3-3 Crab, >= 0.3 deg apart, embedded IRF, "
        f"seed {args.seed}; default finder at its default threshold; found = a candidate within 0.1 deg.",
        f"Command: `python benchmarks/multi_source.py --n {args.n} --output {args.output}`. "
        f"Date: {time.strftime('%Y-%m-%d')}.",
        "",
        "| sources | found | fraction |",
        "|---|---|---|",
        f"| all | {int(np.sum(found))} / {len(found)} | {np.mean(found):.3f} |",
        f"| with a neighbour closer than 0.5 deg | {int(np.sum(close_found))} / {len(close_found)} | "
        f"{np.mean(close_found) if close_found else float('nan'):.3f} |",
        "",
        f"Candidates matching no source: {np.mean(false):.3f} per field.",
        "",
    ])
    write_text_atomic(args.output, text)
    print(text)


if __name__ == "__main__":
    main()
