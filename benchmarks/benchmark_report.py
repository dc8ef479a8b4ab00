"""Assemble docs/results/benchmark.md from `gammapy-cnn benchmark` output folders.

Usage (see benchmarks/run_benchmark.sh for the runs themselves)::

    python benchmarks/benchmark_report.py --run /tmp/bench-z20 default-z20 \\
        --run /tmp/bench-prod5 prod5 --notes findings.md --output docs/results/benchmark.md

Copies each run's figures and summary tables (ECSV) to
``docs/results/benchmark/LABEL/`` and writes one Markdown page: the notes
(hand-written findings), how the numbers were measured, and each run's
generated tables with its figures.
"""

import argparse
import shutil
from pathlib import Path

from gammapy_cnn.utils import write_text_atomic

SUMMARIES = ("detection", "detection_subset", "localisation", "background", "aperture", "timing")
FIGURES = ("localisation_cdf", "completeness_flux", "time_per_map", "example_map")

METHODS = """\
## What is compared

All methods run on the same simulated maps, in the same process, one map at a time
(`gammapy_cnn/benchmark/`; `gammapy-cnn benchmark --help`).

| method | needs | what it is |
|---|---|---|
| `cnn:default`, `cnn:original` (background) | counts | `CNNBackgroundMaker` with the shipped network |
| `ring` | IRF dataset, exclusion mask | `RingBackgroundMaker` (r_in 0.5 deg, width 0.3 deg) on the energy-integrated IRF dataset |
| `fov` | IRF dataset, exclusion mask | `FoVBackgroundMaker(method="scale")` |
| `irf-template` | IRF dataset | the IRF background as is (no normalisation): how wrong the template is |
| `aperture-onoff` | IRF acceptance, exclusion mask | ON/OFF aperture photometry, OFF annulus 0.5-0.8 deg around the aperture, alpha from the IRF acceptance, `WStatCountsStatistic`. `ReflectedRegionsBackgroundMaker` needs an event list, which the fast simulated maps do not have, so this is its ring-aperture equivalent |
| `true-background` | the truth | the true expected background: the reference, not a method |
| `cnn:default`, `cnn:original` (detection) | counts | `CNNSourceFinder` (calibrated default threshold; the original regressor gives one candidate per map) |
| `ring+excess` | IRF dataset, exclusion mask | ring background + `ExcessMapEstimator` (correlation radius 0.1 deg) + `find_peaks` (sqrt(TS) >= 5, min distance 0.1 deg) |
| `tsmap` | IRF dataset, exclusion mask | `TSMapEstimator` (point source, PL index 2.5, kernel 0.3 deg) over the FoV-normalised background + `find_peaks` (sqrt(TS) >= 5); first maps only |
| `smoothed-counts` | counts | template-free floor: counts smoothed by 0.05 deg over a 0.5 deg local level, peaks >= 5 sigma |
| `fit<-METHOD` | IRF dataset | 3D likelihood fit (gammapy `Fit`, 1 deg cutout, free background norm, point source + power law, free position) seeded from METHOD's candidate matched to the true source; counted found if sqrt(TS) >= 5 and within 0.3 deg; first maps only |

**The gammapy methods are helped**: `ring`, `fov`, `ring+excess`, `tsmap` and the ON/OFF
apertures exclude the *true* source positions (0.3 deg), as an analysis of known sources
would with a catalogue; the CNN methods get nothing but the counts.

Metrics: a candidate matches a true source within 0.3 deg (nearest pairs first, each
candidate once); r68/r95 are the 68%/95% containment radii of the matched candidates'
position errors; completeness is the fraction of true sources matched; false candidates
are candidates with no true source within 0.3 deg, per field (all maps) and per empty field
(maps without sources); the background ratio is the estimated over the true background
summed over the safe mask (median and 16/84% quantiles over maps); the aperture bias is
(N - B) / true signal - 1 in a 0.2 deg aperture at each true source (median); the
empty-field significance is (N - B) / sqrt(B) in 20 random 0.1 deg apertures per
source-free map (for the true background its spread is the Poisson reference, not 1 at low
counts); times are wall-clock medians per map (per fit for the fits, per aperture for the
ON/OFF photometry), networks loaded and traced beforehand.
"""


def _demote(markdown, levels=1):
    out = []
    for line in markdown.splitlines():
        out.append("#" * levels + line if line.startswith("#") else line)
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs=2, action="append", metavar=("DIR", "LABEL"), required=True)
    parser.add_argument("--notes", type=Path, help="Markdown with the findings, put first.")
    parser.add_argument("--output", type=Path, default=Path("docs/results/benchmark.md"))
    args = parser.parse_args(argv)

    figures_root = args.output.parent / args.output.stem
    parts = ["# Benchmark: CNN methods beside gammapy's", ""]
    if args.notes:
        parts += [args.notes.read_text().strip(), ""]
    parts += [METHODS, ""]
    for directory, label in args.run:
        directory = Path(directory)
        if not (directory / "benchmark.md").is_file():
            raise SystemExit(f"{directory} holds no benchmark.md: not a gammapy-cnn benchmark output")
        target = figures_root / label
        target.mkdir(parents=True, exist_ok=True)
        for name in SUMMARIES:
            shutil.copyfile(directory / f"{name}.ecsv", target / f"{name}.ecsv")
        text = (directory / "benchmark.md").read_text()
        text = text.replace("# gammapy-cnn benchmark", f"# Results: {label}", 1)
        parts += [_demote(text), ""]
        parts += [f"### Figures ({label})", ""]
        for name in FIGURES:
            if (directory / f"{name}.png").is_file():
                shutil.copyfile(directory / f"{name}.png", target / f"{name}.png")
                rel = (target / f"{name}.png").relative_to(args.output.parent)
                parts += [f"![{name} ({label})]({rel.as_posix()})", ""]
    write_text_atomic(args.output, "\n".join(parts))
    print(f"wrote {args.output} and {figures_root}/")


if __name__ == "__main__":
    main()
