"""The template background on real data: H.E.S.S. DL3 DR1 runs with and without their IRF template.

For each field of ``hess_dr1.py`` (Crab Nebula, PKS 2155-304 and the three
source-free fields), every whole run and the stack of the field's runs are
searched twice by the shipped finder: on the CNN background from the counts
alone (``gammapy-cnn find``), and on each run's IRF background normalised
outside an exclusion mask found in the counts, one sky mask for a stack
(``gammapy-cnn find --background-network template``,
`~gammapy_cnn.templates.AutoExclusionFoVBackgroundMaker`). Same maps and cuts
as ``hess_dr1.md``: 5 x 5 deg of 0.025 deg pixels (a stack's map widened
to hold every run's field), 2.5 deg from the pointing, from each run's safe
threshold (at least 0.3 TeV) to 100 TeV.

The question: does the template path, built for sources of a degree, keep
the point-source results and add no false candidate with a real
instrument's background model?

Usage::

    python benchmarks/template_hess.py --output docs/results/template_hess.md
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from gammapy.data import DataStore

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from hess_dr1 import ENERGY_MAX, MATCH_RADIUS, OFF_TARGETS, OTHER_RADIUS, SOURCES, energy_thresholds  # noqa: E402

from gammapy_cnn import CNNSourceFinder  # noqa: E402
from gammapy_cnn.data import read_observations  # noqa: E402
from gammapy_cnn.example_data import find_hess_dr1  # noqa: E402
from gammapy_cnn.realtime import WindowSearch  # noqa: E402
from gammapy_cnn.utils import cpu_model, write_text_atomic  # noqa: E402

METHODS = ("counts only", "template")


def search(observations, thresholds, template):
    finder = CNNSourceFinder(background_network=None if template else "default")
    windows = WindowSearch(finder, energy_min=lambda obs: thresholds[int(obs.obs_id)], energy_max=ENERGY_MAX,
                           background_template=template)
    return windows.whole_run(observations).candidates


def describe(table, position):
    """(found, separation deg, significance, other candidates) of one search."""
    if not len(table):
        return False, np.nan, np.nan, 0
    coords = SkyCoord(table["RA"], table["DEC"], unit="deg")
    if position is None:
        return False, np.nan, np.nan, len(table)
    separation = coords.separation(position)
    best = int(np.argmin(separation))
    found = separation[best] < MATCH_RADIUS
    return (bool(found), float(separation[best].deg) if found else np.nan,
            float(table["significance"][best]) if found else np.nan, int(np.sum(separation > OTHER_RADIUS)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=find_hess_dr1())
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    if args.data is None:
        parser.error("no H.E.S.S. DL3 DR1 data: set $GAMMAPY_DATA or give --data")
    start = time.time()
    store = DataStore.from_dir(args.data)
    thresholds = energy_thresholds(store.obs_table)
    fields = {name: (source["position"], source["obs_ids"]) for name, source in SOURCES.items()}
    for target in OFF_TARGETS:
        ids = [int(r["OBS_ID"]) for r in store.obs_table if str(r["OBJECT"]).strip() == target]
        fields[target] = (None, ids)
    lines = ["# The template background on H.E.S.S. DR1 runs", "",
             "python benchmarks/template_hess.py --output docs/results/template_hess.md", "",
             __doc__.split("\n\n", 1)[1].split("Usage::")[0].strip(), "",
             "| field | runs | method | target found | separation [deg] | significance | other candidates |",
             "|---|---|---|---|---|---|---|"]
    totals = {method: 0 for method in METHODS}
    for name, (position, ids) in fields.items():
        observations = read_observations(args.data, ids)
        groups = [(f"stack of {len(ids)}", list(observations))] + [(str(o.obs_id), [o]) for o in observations]
        for label, runs in groups:
            for method in METHODS:
                table = search(runs, thresholds, method == "template")
                found, separation, significance, other = describe(table, position)
                if not label.startswith("stack"):
                    totals[method] += other
                target = "-" if position is None else ("yes" if found else "no")
                lines.append(f"| {name} | {label} | {method} | {target} | {separation:.3f} | "
                             f"{significance:.1f} | {other} |")
                print(lines[-1], flush=True)
    n_runs = sum(len(ids) for _, ids in fields.values())
    lines += ["", f"Other candidates (farther than {OTHER_RADIUS} from the target, or any on a source-free "
              f"field) in the {n_runs} single runs: counts only {totals['counts only']}, template "
              f"{totals['template']}.", "",
              f"Machine: {cpu_model()}; {(time.time() - start) / 60:.1f} min.", ""]
    write_text_atomic(args.output, "\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
