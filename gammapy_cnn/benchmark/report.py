"""The benchmark's outputs: `BenchmarkResult`, its Markdown report, ECSV tables and figures."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table
from scipy.ndimage import gaussian_filter

from ..utils import atomic_path, write_text_atomic
from .metrics import MATCH_RADIUS

__all__ = ["BenchmarkResult", "pivot_localisation", "table_to_markdown", "write_figures"]


@dataclass
class BenchmarkResult:
    """Tables (and per-item records) of one benchmark run.

    Attributes
    ----------
    tables : dict of `~astropy.table.Table`
        ``detection``, ``detection_subset``, ``localisation``, ``background``,
        ``aperture``, ``timing`` (summaries) and ``sources``, ``fields``,
        ``maps``, ``background_maps``, ``apertures``, ``empty_apertures``
        (records, one row per item).
    meta : dict
        Settings, machine, versions, networks.
    example : dict
        Images of one example map for the figure.
    """

    tables: dict
    meta: dict
    example: dict = field(default_factory=dict)

    SUMMARIES = ("detection", "detection_subset", "localisation", "background", "aperture", "timing")

    def to_markdown(self):
        """The summary tables and the run's settings as Markdown."""
        m = self.meta
        lines = [
            "# gammapy-cnn benchmark", "",
            f"- date (UTC): {m['date']}",
            f"- command: `{m['command']}`",
            f"- machine: {m['cpu']}, {m['cores']} cores ({m['platform']})",
            f"- versions: {m['versions']}",
            f"- IRF: `{m['irf']}`; scenario preset `benchmark`, seed {m['seed']}, "
            f"{m['n_maps']} maps ({m['n_slow']} with TS map and fits)",
            f"- networks: {m['networks']}",
            f"- IRF datasets: {m['reduction']}",
            f"- total wall time: {m['wall_time_s']:.0f} s",
            "",
        ]
        captions = {
            "detection": "Detection and localisation, all maps where the method ran "
                         f"(match radius {MATCH_RADIUS}; r68/r95: containment radii of the "
                         "matched candidates' position errors)",
            "detection_subset": f"Detection on the first {m['n_slow']} maps only, where every method ran",
            "localisation": "Completeness and containment radii per true flux (Crab) and livetime (s), "
                            "and per flux at each livetime",
            "background": "Background estimation (ratio: estimated / true background summed over the "
                          "safe mask; aperture bias: (N - B) / true signal - 1 in 0.2 deg apertures "
                          "at the true sources; empty-field significance: (N - B) / sqrt(B) in random "
                          "0.1 deg apertures of source-free maps)",
            "aperture": "Median aperture excess bias per true flux (Crab)",
            "timing": "Wall time per map (median, ms) and ratio to the gammapy reference "
                      "(ring for background, ring+excess for detection)",
        }
        for name in self.SUMMARIES:
            lines += [f"## {name}", "", captions[name], ""]
            if name == "localisation" and len(self.tables[name]):
                # the long table is in localisation.ecsv; one pivot per quantity reads better
                for quantity in ("n_sources", "completeness", "r68", "r95"):
                    for column in ("flux", "livetime"):
                        pivot = pivot_localisation(self.tables[name], column, quantity)
                        lines += [f"{quantity} per {column}:", "", table_to_markdown(pivot), ""]
                per_livetime = [b for b in dict.fromkeys(self.tables[name]["bin"]) if "@" in b]
                for quantity in ("n_sources", "completeness"):
                    for column in per_livetime:
                        pivot = pivot_localisation(self.tables[name], column, quantity)
                        flux, livetime = column.split("@")
                        lines += [f"{quantity} per {flux} at {livetime}:", "", table_to_markdown(pivot), ""]
            else:
                lines += [table_to_markdown(self.tables[name]), ""]
        return "\n".join(lines)

    def write(self, output):
        """Write the Markdown, every table as ECSV and the figures into ``output``."""
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output / "benchmark.md", self.to_markdown())
        paths = [output / "benchmark.md"]
        for name, table in self.tables.items():
            path = output / f"{name}.ecsv"
            with atomic_path(path) as tmp:
                table.write(tmp, format="ascii.ecsv", overwrite=True)
            paths.append(path)
        return paths + write_figures(self, output)


def pivot_localisation(table, column, quantity):
    """One row per method, one column per bin of ``column`` (flux, livetime, flux@T), of ``quantity``."""
    sel = table[table["bin"] == column]
    values = sorted(set(np.asarray(sel["value"], float)))
    unit = {"flux": "Crab", "livetime": "s"}.get(column.split("@")[0], "")
    rows = []
    for method in dict.fromkeys(sel["method"]):
        row = {"method": str(method)}
        for value in values:
            hit = sel[(sel["method"] == method) & (sel["value"] == value)]
            row[f"{value:g} {unit}".strip()] = float(hit[quantity][0]) if len(hit) else np.nan
        rows.append(row)
    out = Table(rows=rows, names=list(rows[0])) if rows else Table()
    out.meta["quantity"] = quantity
    return out


def table_to_markdown(table, digits=3):
    """A table as Markdown (floats with ``digits`` significant digits, units in headers)."""
    names = table.colnames
    header = [f"{n} [{table[n].unit}]" if table[n].unit not in (None, "") else n for n in names]
    rows = []
    for row in table:
        cells = []
        for n in names:
            value = row[n]
            if isinstance(value, (float, np.floating)):
                cells.append("—" if not np.isfinite(value) else f"{value:.{digits}g}")
            else:
                cells.append(str(value))
        rows.append(cells)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(names)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


# --- figures ----------------------------------------------------------------------------


def write_figures(result, output):
    """Localisation-error CDFs, completeness vs flux, time per map and an example map (PNG).

    Returns
    -------
    paths : list of `~pathlib.Path`
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(fig, name):
        path = output / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)

    sources = result.tables["sources"]
    methods = list(result.tables["detection"]["method"]) if len(result.tables["detection"]) else []
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for method in methods:
        err = np.sort(np.asarray(sources["error"][sources["method"] == method], float)) if len(sources) else []
        err = err[np.isfinite(err)] if len(err) else err
        if len(err):
            ax.step(err, np.arange(1, len(err) + 1) / len(err), where="post", label=f"{method} ({len(err)})")
    for q in (0.68, 0.95):
        ax.axhline(q, color="0.7", lw=0.8, ls=":")
    ax.set(xlabel="position error of matched candidate [deg]", ylabel="fraction of matched sources",
           xlim=(0, MATCH_RADIUS.to_value("deg")), ylim=(0, 1.02), title="Localisation error CDF")
    ax.legend(fontsize=7)
    save(fig, "localisation_cdf.png")

    loc = result.tables["localisation"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for method in methods:
        sel = (loc["method"] == method) & (loc["bin"] == "flux") if len(loc) else []
        if len(loc) and np.any(sel):
            ax.plot(loc["value"][sel], loc["completeness"][sel], "o-", label=method)
    ax.set(xscale="log", xlabel="true flux [Crab]", ylabel="completeness", ylim=(-0.02, 1.02),
           title="Completeness vs flux (all livetimes)")
    ax.legend(fontsize=7)
    save(fig, "completeness_flux.png")

    timing = result.tables["timing"]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(timing) + 1.2))
    labels = [f"{r['method']} ({r['stage']}, {r['unit']})" for r in timing]
    colors = {"reduction": "0.5", "background": "tab:blue", "detection": "tab:orange"}
    ax.barh(np.arange(len(timing)), timing["time"], color=[colors[s] for s in timing["stage"]])
    ax.set_yticks(np.arange(len(timing)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set(xscale="log", xlabel="median wall time [ms]", title=f"Time per map ({result.meta['cpu']})")
    save(fig, "time_per_map.png")

    ex = result.example
    if ex:
        panels = [("counts (0.05 deg smoothed)", gaussian_filter(ex["counts"], 2), "viridis")]
        if "cleaned" in ex:
            panels.append((f"{ex['cleaner']} cleaned excess", ex["cleaned"], "RdBu_r"))
        panels.append(("ring + excess sqrt(TS)", ex["ring_sqrt_ts"], "RdBu_r"))
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2))
        markers = ["x", "+", "1", "2", "3", "4"]
        for ax, (title, image, cmap) in zip(np.atleast_1d(axes), panels):
            lim = np.nanmax(np.abs(image)) if cmap == "RdBu_r" else None
            kw = dict(vmin=-lim, vmax=lim) if lim else {}
            ax.imshow(image, origin="lower", cmap=cmap, **kw)
            for (x, y), flux in zip(ex["sources"], ex["fluxes"]):
                ax.add_patch(plt.Circle((x, y), MATCH_RADIUS.to_value("deg") / ex["binsz"], fill=False,
                                        color="k", lw=0.8))
                ax.annotate(f"{flux:g} Crab", (x, y + 13), ha="center", fontsize=7)
            for marker, (method, xy) in zip(markers, ex["candidates"].items()):
                if len(xy):
                    ax.plot(xy[:, 0], xy[:, 1], marker, ms=7, mew=1.2, ls="none", label=method)
            ax.set_title(title, fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
        np.atleast_1d(axes)[0].legend(fontsize=6, loc="lower left")
        fig.suptitle(f"map {ex['map_index']}, {ex['livetime']:g} s: true sources (circles: 0.3 deg "
                     "match radius) and candidates", fontsize=9)
        save(fig, "example_map.png")
    return paths
