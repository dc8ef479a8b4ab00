"""Human-readable model cards (``NAME.md``) and recipes (``NAME.yaml``) from the JSON cards.

``python -m gammapy_cnn.networks.cards`` rewrites every ``weights/*.md`` and ``weights/*.yaml``.
The JSON card stays the source of truth (it is what `load_network` checks).
"""

import json
from pathlib import Path

import yaml

from ..utils import ENERGY_RANGE, NATIVE_BINSZ, NATIVE_NPIX, write_text_atomic

_PURPOSE = {
    ("cleaner", "default"): "Background of a counts map (CNNBackgroundMaker): expected background counts "
    "per pixel from the counts alone, on 0.2 deg cells, refit in normalisation by the maker.",
    ("cleaner", "original"): "The original CNN-Cleaner (autoencoder on [0, 1]-stretched, 5-pixel-smoothed "
    "maps), kept as the baseline.",
    ("finder", "default"): "Source candidates (CNNSourceFinder): heatmap of source probability and "
    "sub-cell offset on 0.1 deg cells; positions are then refined by a local Poisson fit.",
    ("finder", "original"): "The original CNN-Regressor (one (x, y) per map, fed by the original cleaner), "
    "kept as the baseline.",
}


def _metrics_lines(kind, metrics):
    lines = []
    for irf, m in metrics.items():
        name = Path(irf).name
        if kind == "cleaner":
            ratio = m["background_ratio_median"]
            bias = m["aperture_excess_bias_median"]
            lines.append(
                f"| `{name}` | {ratio.get('0.0', float('nan')):.3f} | {ratio.get('1.0', float('nan')):.3f} | "
                f"{bias.get('1.0|100', float('nan')):+.3f} | "
                f"{m['empty_field_significance_mean'].get('100', float('nan')):+.2f} / "
                f"{m['empty_field_significance_std'].get('100', float('nan')):.2f} | "
                f"{m['empty_field_significance_mean'].get('1800', float('nan')):+.2f} / "
                f"{m['empty_field_significance_std'].get('1800', float('nan')):.2f} | {m['run_ms_p50']:.1f} |")
        else:
            c68, comp = m["containment_68_deg"], m["completeness"]
            lines.append(
                f"| `{name}` | {c68.get('1.0|100', float('nan')):.3f} | {c68.get('0.3|100', float('nan')):.3f} | "
                f"{comp.get('0.3|100', float('nan')):.2f} | {m['false_per_field']:.3f} | {m['run_ms_p50']:.1f} |")
    if kind == "cleaner":
        head = ["| IRF | bkg/true, empty | bkg/true, 1 Crab | excess bias 1 Crab 100 s | "
                "empty-field sig. mean / std (100 s) | (1800 s) | `run` p50 [ms] |",
                "|---|---|---|---|---|---|---|"]
    else:
        head = ["| IRF | r68 1 Crab 100 s [deg] | r68 0.3 Crab 100 s [deg] | completeness 0.3 Crab 100 s | "
                "false / field | `run` p50 [ms] |", "|---|---|---|---|---|---|"]
    return head + lines


def card_markdown(card, name):
    """Markdown text of one model card."""
    from . import canonical_name

    kind, arch = card["kind"], canonical_name(card["architecture"])
    data = card.get("training_data", {})
    history = card.get("history", [])
    lines = [
        f"# Model card: `{name}.keras`",
        "",
        _PURPOSE.get((kind, arch), ""),
        "",
        f"- kind / architecture: {kind} / {arch}; {card.get('parameters', '?')} parameters",
        f"- SHA-256 of the `.keras` file: `{card['sha256']}` (checked at every load)",
        f"- preprocessing version {card['preprocessing_version']}, native pixels "
        f"{card['native_binsz_deg']} deg; package version {card.get('package_version', '?')}",
        f"- training data: `{data.get('file')}`, {data.get('n_maps')} simulated maps "
        f"({data.get('n_train')} train / {data.get('n_validation')} validation), seed {data.get('seed')}, "
        f"IRFs {', '.join(data.get('irfs', []))}",
        f"- epochs: {len(history)}; final loss {history[-1].get('loss', float('nan')):.4g}, "
        f"validation loss {history[-1].get('val_loss', float('nan')):.4g}" if history else "- epochs: 0",
        f"- training time: {card.get('training_wall_time', str(card.get('training_seconds_this_run', '?')) + ' s')}",
        "",
        "## Recipe",
        "",
        "```yaml",
        yaml.safe_dump(card.get("recipe", {}), sort_keys=False).strip(),
        "```",
        "",
    ]
    cal = card.get("calibration")
    if cal:
        points = [(s, r) for s, r in zip(cal["score"], cal["false_per_field"])
                  if abs(s * 10 - round(s * 10)) < 1e-6]
        lines += [
            "## Score calibration",
            "",
            f"On {cal['n_fields']} held-out fields (`{cal['data']}`), a candidate farther than "
            f"{cal['match_radius_deg']} deg from every true source is false. Default threshold "
            f"{cal['default_threshold']} (target {cal['target_false_per_field']} false candidates per field).",
            "",
            f"Position errors: the fit's Fisher errors are multiplied by `pos_err_scale` = "
            f"{cal.get('pos_err_scale', 1.0):.3f}, the 68% quantile of (true error / fitted 68% radius) "
            f"over the true candidates above the default threshold, so that `pos_err_68` contains "
            f"68% of them.",
            "",
        ]
        if "rescue_score" in cal:
            lines += [
                f"Rescue rule: a peak with score >= {cal['rescue_score']} (below the threshold) is kept when "
                f"its local fit gives sqrt(TS) >= {cal['rescue_significance']}. On the same fields it adds "
                f"{cal['rescue_false_per_field']:.4f} false candidates per field and "
                f"{cal['n_true_candidates_rescued']} true ones (to {cal['n_true_candidates_above_threshold']}).",
                "",
            ]
        if "min_significance" in cal:
            lines += [
                f"Trials floor: a candidate kept by its score must also reach sqrt(TS) >= "
                f"{cal['min_significance']:.2f} (Poisson noise over 2500 positions per field gives the "
                f"target rate there). On the same fields, above the threshold, it removes "
                f"{cal['floor_false_per_field']:.4f} false candidates per field and "
                f"{cal['n_true_candidates_below_floor']} true ones.",
                "",
            ]
        lines += [
            "| score >= | false candidates per field |",
            "|---|---|",
            *[f"| {s:.1f} | {r:.4f} |" for s, r in points],
            "",
        ]
    if card.get("metrics"):
        lines += ["## Held-out metrics", "",
                  "150 maps per IRF (seed 424242; fluxes 0-3 Crab, 10 s-30 min), "
                  "`benchmarks/network_quality.py`; full tables in `docs/results/networks.md`.", ""]
        lines += _metrics_lines(kind, card["metrics"]) + [""]
    lines += [
        "## Limits",
        "",
        "Trained on simulations of CTAO-North-like responses (embedded IRF, 20-60 deg zenith), "
        f"{NATIVE_NPIX} x {NATIVE_NPIX} maps of {NATIVE_BINSZ.to_value('deg'):g} deg centred on the pointing, "
        f"{ENERGY_RANGE[0].to_value('TeV'):g}-{ENERGY_RANGE[1].to_value('TeV'):g} TeV. Other instruments work "
        "(H.E.S.S. DR1: docs/results/hess_dr1.md) but fine-tuning on simulations with your IRF "
        "(`gammapy-cnn fine-tune`) is advised for science use.",
        "",
    ]
    return "\n".join(lines)


def write_all(directory=None):
    """Write ``NAME.md`` beside every shipped ``NAME.json`` card."""
    from . import weights_dir

    directory = Path(directory or weights_dir())
    for path in sorted(directory.glob("*.json")):
        card = json.loads(path.read_text())
        write_text_atomic(path.with_suffix(".md"), card_markdown(card, path.stem))
        # The exact recipe that made this file, usable as `gammapy-cnn train --config`.
        recipe = {k: v for k, v in card.get("recipe", {}).items() if v is not None}
        write_text_atomic(path.with_suffix(".yaml"), yaml.safe_dump(recipe, sort_keys=False))


if __name__ == "__main__":
    write_all()
