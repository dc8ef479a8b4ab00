"""Markdown summary of the shipped networks' held-out metrics (docs/results/networks.md).

Usage::

    python benchmarks/network_report.py docs/results/networks_default-z20.json docs/results/networks_prod5.json \
        docs/results/networks_1dc.json --output docs/results/networks.md

Reads the JSON files written by ``benchmarks/network_quality.py``.
"""

import argparse
import json
from pathlib import Path

from gammapy_cnn.networks import canonical_name
from gammapy_cnn.utils import write_text_atomic


def fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def section(result):
    irf = Path(result["irf"]).name
    lines = [f"## IRF `{irf}` ({result['n_maps']} maps, seed {result['seed']})", ""]
    lines += ["Background (median of estimate / truth in the map; aperture 0.2 deg excess / true "
              "signal - 1; empty fields: mean / std of the significance in 20 random 0.1 deg "
              "apertures per map, (N - B) / sqrt(B) at 10 s / 100 s / 1800 s and the signed Cash "
              "significance at 100 s / 1800 s (at 10 s an aperture holds ~0.2 counts and the Cash "
              "significance is not Gaussian, even with the true background: see its row)):", ""]
    lines += ["| cleaner | ratio, empty | ratio, 0.3 Crab | ratio, 1 Crab | excess bias 1 Crab 100 s | "
              "excess bias 0.3 Crab 1800 s | (N-B)/sqrt(B) 10 s | (N-B)/sqrt(B) 100 s | "
              "(N-B)/sqrt(B) 1800 s | Cash 100 s | Cash 1800 s | `run` p50 [ms] |", "|---" * 12 + "|"]
    rows = dict(result["cleaner"])
    if "reference" in result:
        rows["true background (reference)"] = result["reference"]
    for name, m in rows.items():
        r, e = m["background_ratio_median"], m["aperture_excess_bias_median"]
        mean, std = m["empty_field_significance_mean"], m["empty_field_significance_std"]
        smean = m.get("empty_field_simple_significance_mean", {})
        sstd = m.get("empty_field_simple_significance_std", {})
        simple = " | ".join(f"{fmt(smean.get(t), 2)} / {fmt(sstd.get(t), 2)}" for t in ("10", "100", "1800"))
        run = f"{m['run_ms_p50']:.1f}" if "run_ms_p50" in m else "-"
        lines.append(
            f"| {label(name)} | {fmt(r.get('0.0'))} | {fmt(r.get('0.3'))} | {fmt(r.get('1.0'))} | "
            f"{fmt(e.get('1.0|100'))} | {fmt(e.get('0.3|1800'))} | {simple} | "
            f"{fmt(mean.get('100'), 2)} / {fmt(std.get('100'), 2)} | "
            f"{fmt(mean.get('1800'), 2)} / {fmt(std.get('1800'), 2)} | {run} |")
    lines += ["", "Finder (68% containment radius of the matched candidate's error in deg; "
              "completeness; false candidates per field):", ""]
    lines += ["| finder | r68 1 Crab 100 s | r68 0.3 Crab 100 s | r68 1 Crab 10 s | complete 0.1 Crab 100 s | "
              "complete 0.3 Crab 100 s | complete 0.1 Crab 1800 s | false / field | `run` p50 [ms] |",
              "|---" * 9 + "|"]
    for name, m in result["finder"].items():
        c68, comp = m["containment_68_deg"], m["completeness"]
        lines.append(
            f"| {label(name)} | {fmt(c68.get('1.0|100'))} | {fmt(c68.get('0.3|100'))} | "
            f"{fmt(c68.get('1.0|10'))} | "
            f"{fmt(comp.get('0.1|100'), 2)} | {fmt(comp.get('0.3|100'), 2)} | {fmt(comp.get('0.1|1800'), 2)} | "
            f"{m['false_per_field']:.3f} | {m['run_ms_p50']:.1f} |")
    lines += ["", f"Command: `{result['command']}`; machine: {result['machine']}.", ""]
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    lines = [
        "# Shipped networks on held-out simulations",
        "",
        "Per IRF: 150 maps, one source (0, 0.1, 0.3, 1 or 3 Crab, index 2.5) or none, 10 s / 100 s / "
        "1800 s, background norm 0.85-1.15 and tilt +-0.1, seed 424242 (training used 1001-1003). "
        "`default` = our networks, `original` = the original CNN-Cleaner / CNN-Regressor trained by our "
        "recipes. About 10 maps per (flux, exposure) cell, so single cells are noisy; "
        "`docs/results/aperture_bias.md` measures the aperture excess with 100 maps per cell and "
        "`docs/results/localisation.md` the localisation beside a 3D likelihood fit; "
        "`gammapy-cnn benchmark` has the larger comparison with gammapy's methods. The original finder always "
        "returns exactly one candidate (the original design), so its false-candidate count is not "
        "meaningful and is reported as 0.",
        "",
    ]
    for path in args.results:
        lines += section(json.loads(path.read_text()))
    write_text_atomic(args.output, "\n".join(lines))
    print("\n".join(lines))


def label(name):
    """A shipped network's name, or ``finder_default (previous)`` for a file in ``previous/``."""
    path = Path(name)
    return f"{path.stem} ({path.parent.name})" if path.suffix == ".keras" else canonical_name(name)


if __name__ == "__main__":
    main()
