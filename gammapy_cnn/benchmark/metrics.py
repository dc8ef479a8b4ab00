"""How the benchmark scores the methods: matching candidates to true sources and the summary tables.

The summaries turn the per-item records of `~gammapy_cnn.benchmark.run_benchmark`
(one row per source, field, map or aperture and method) into one row per method.
"""

import astropy.units as u
import numpy as np
from astropy.table import Table

__all__ = [
    "MATCH_RADIUS",
    "aperture_summary",
    "background_summary",
    "containment_radius",
    "detection_summary",
    "finite_median",
    "localisation_summary",
    "match_candidates",
    "timing_summary",
    "value_bins",
]

#: A candidate within this distance of a true source detects it.
MATCH_RADIUS = 0.3 * u.deg


def match_candidates(candidates, sources, radius_pix):
    """Match candidates to true sources, nearest pairs first, each used once.

    Parameters
    ----------
    candidates : `~numpy.ndarray`
        (n, >=2) x, y pixel positions.
    sources : `~numpy.ndarray`
        (m, 2) true pixel positions.
    radius_pix : float
        Match radius (pixels).

    Returns
    -------
    errors : `~numpy.ndarray`
        (m,) distance (pixels) of each source's matched candidate, NaN if none.
    matched : `~numpy.ndarray`
        (m,) index of the matched candidate, -1 if none.
    n_false : int
        Candidates with no true source within ``radius_pix``.
    """
    candidates = np.asarray(candidates, float).reshape(-1, np.shape(candidates)[-1] if np.size(candidates) else 2)
    sources = np.asarray(sources, float).reshape(-1, 2)
    m = len(sources)
    errors, matched = np.full(m, np.nan), np.full(m, -1)
    if len(candidates) and m:
        d = np.hypot(candidates[:, None, 0] - sources[None, :, 0],
                     candidates[:, None, 1] - sources[None, :, 1])
        used = np.zeros(len(candidates), bool)
        for flat in np.argsort(d, axis=None):
            i, j = np.unravel_index(flat, d.shape)
            if d[i, j] > radius_pix:
                break
            if used[i] or matched[j] >= 0:
                continue
            used[i], matched[j], errors[j] = True, i, d[i, j]
        n_false = int(np.sum(d.min(axis=1) > radius_pix))
    else:
        n_false = len(candidates)
    return errors, matched, n_false


def containment_radius(errors, fraction):
    """Radius containing ``fraction`` of the finite ``errors`` (NaN if none)."""
    errors = np.asarray(errors, float)
    errors = errors[np.isfinite(errors)]
    return float(np.quantile(errors, fraction)) if len(errors) else np.nan


def finite_median(values):
    """Median of the finite ``values`` (NaN if none)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else np.nan


def value_bins(values):
    """Bin labels: the distinct values when there are few (choice scenarios), else decades.

    Parameters
    ----------
    values : array-like
        Positive values (fluxes in Crab, livetimes in s).

    Returns
    -------
    labels : `~numpy.ndarray`
        The bin label of each value: the value itself, or its decade's geometric centre.
    distinct : `~numpy.ndarray`
        The sorted distinct labels.
    """
    values = np.asarray(values, float)
    distinct = np.unique(values)
    if len(distinct) <= 8:
        return values, distinct
    edges = 10 ** np.arange(np.floor(np.log10(values.min())), np.ceil(np.log10(values.max())) + 1)
    idx = np.clip(np.digitize(values, edges) - 1, 0, len(edges) - 2)
    centres = np.sqrt(edges[:-1] * edges[1:])
    return centres[idx], np.unique(centres[idx])


# --- summaries ---------------------------------------------------------------------


def detection_summary(tables, methods, max_map=None):
    """One row per detection method: completeness, containment radii, false candidates, time.

    Parameters
    ----------
    tables : dict of `~astropy.table.Table`
        The ``sources`` and ``fields`` records.
    methods : list of str
        Detection methods, in the order of the rows.
    max_map : int, optional
        Use only the maps with a lower index (the ones every method ran on).

    Returns
    -------
    table : `~astropy.table.Table`
        ``time`` is the median per map (ms); ``time_ratio`` is relative to ``ring+excess``.
    """
    sources, fields = tables["sources"], tables["fields"]
    if max_map is not None:
        sources = sources[sources["map_index"] < max_map] if len(sources) else sources
        fields = fields[fields["map_index"] < max_map] if len(fields) else fields
    ring_time = finite_median(fields["time"][fields["method"] == "ring+excess"]) if len(fields) else np.nan
    rows = []
    for method in methods:
        f = fields[fields["method"] == method] if len(fields) else fields
        s = sources[sources["method"] == method] if len(sources) else sources
        empty = f[f["n_sources"] == 0] if len(f) else f
        time_ms = 1e3 * finite_median(f["time"]) if len(f) else np.nan
        rows.append(dict(
            method=method, n_maps=len(f), n_sources=len(s),
            completeness=float(np.mean(s["found"])) if len(s) else np.nan,
            r68=containment_radius(s["error"], 0.68) if len(s) else np.nan,
            r95=containment_radius(s["error"], 0.95) if len(s) else np.nan,
            false_per_field=float(np.mean(f["n_false"])) if len(f) else np.nan,
            false_per_empty_field=float(np.mean(empty["n_false"])) if len(empty) else np.nan,
            time=time_ms, time_ratio=time_ms / (1e3 * ring_time) if ring_time else np.nan,
        ))
    table = Table(rows=rows, names=list(rows[0]))
    table["r68"].unit = table["r95"].unit = "deg"
    table["time"].unit = "ms"
    return table


def localisation_summary(sources, methods):
    """Completeness and containment radii per true flux, per livetime and per flux at each livetime.

    Parameters
    ----------
    sources : `~astropy.table.Table`
        The ``sources`` records (one row per true source and method).
    methods : list of str

    Returns
    -------
    table : `~astropy.table.Table`
        One row per method and bin; ``bin`` is ``flux``, ``livetime`` or ``flux@T s``
        and ``value`` its label (see `value_bins`). Empty without records.
    """
    rows = []
    if not len(sources):
        return Table()
    # per flux, per livetime, and per flux at each livetime (bin "flux@100 s")
    selections = [(column, np.ones(len(sources), bool), column) for column in ("flux", "livetime")]
    livetimes, distinct = value_bins(sources["livetime"])
    selections += [(f"flux@{t:g} s", livetimes == t, "flux") for t in distinct]
    for bin_name, subset, column in selections:
        labels, values = value_bins(sources[column])
        for method in methods:
            sel = subset & (sources["method"] == method)
            for value in values:
                s = sources[sel & (labels == value)]
                if not len(s):
                    continue
                rows.append(dict(
                    method=method, bin=bin_name, value=float(value), n_sources=len(s),
                    completeness=float(np.mean(s["found"])),
                    r68=containment_radius(s["error"], 0.68), r95=containment_radius(s["error"], 0.95)))
    table = Table(rows=rows, names=list(rows[0]))
    table["r68"].unit = table["r95"].unit = "deg"
    return table


def background_summary(tables, methods):
    """One row per background method: total ratio to the truth, aperture bias, empty-field significance, time.

    Parameters
    ----------
    tables : dict of `~astropy.table.Table`
        The ``background_maps``, ``apertures`` and ``empty_apertures`` records.
    methods : list of str

    Returns
    -------
    table : `~astropy.table.Table`
        ``time`` is the median per map (ms); ``time_ratio`` is relative to ``ring``.
    """
    maps, apertures, empty = tables["background_maps"], tables["apertures"], tables["empty_apertures"]
    ring_time = finite_median(maps["time"][maps["method"] == "ring"]) if len(maps) else np.nan
    rows = []
    for method in methods:
        m = maps[maps["method"] == method] if len(maps) else maps
        a = apertures[apertures["method"] == method] if len(apertures) else apertures
        e = empty[empty["method"] == method] if len(empty) else empty
        sig = np.asarray(e["significance"], float) if len(e) else np.zeros(0)
        sig = sig[np.isfinite(sig)]
        time_ms = 1e3 * finite_median(m["time"]) if len(m) else np.nan
        rows.append(dict(
            method=method,
            ratio_median=finite_median(m["ratio"]) if len(m) else np.nan,
            ratio_p16=float(np.nanquantile(m["ratio"], 0.16)) if len(m) and np.isfinite(m["ratio"]).any() else np.nan,
            ratio_p84=float(np.nanquantile(m["ratio"], 0.84)) if len(m) and np.isfinite(m["ratio"]).any() else np.nan,
            n_apertures=len(a), aperture_bias=finite_median(a["bias"]) if len(a) else np.nan,
            n_empty_apertures=len(sig),
            empty_sig_mean=float(np.mean(sig)) if len(sig) else np.nan,
            empty_sig_std=float(np.std(sig)) if len(sig) else np.nan,
            time=time_ms,
            time_ratio=time_ms / (1e3 * ring_time) if ring_time else np.nan,
        ))
    table = Table(rows=rows, names=list(rows[0]))
    table["time"].unit = "ms"
    return table


def aperture_summary(apertures, methods):
    """Median aperture excess bias per background method and true flux bin.

    Parameters
    ----------
    apertures : `~astropy.table.Table`
        The ``apertures`` records.
    methods : list of str

    Returns
    -------
    table : `~astropy.table.Table`
        One row per method, one ``bias_FLUX`` column per flux bin. Empty without records.
    """
    if not len(apertures):
        return Table()
    labels, values = value_bins(apertures["flux"])
    rows = []
    for method in methods:
        row = dict(method=method)
        for value in values:
            sel = (apertures["method"] == method) & (labels == value)
            row[f"bias_{value:g}"] = finite_median(apertures["bias"][sel])
        rows.append(row)
    return Table(rows=rows, names=list(rows[0]))


def timing_summary(tables, detection_methods, background_methods, reduction_times=()):
    """Median wall time of the IRF reduction and of every method, and its ratio to the gammapy reference.

    Parameters
    ----------
    tables : dict of `~astropy.table.Table`
        The ``fields``, ``maps`` and ``background_maps`` records.
    detection_methods, background_methods : list of str
    reduction_times : sequence of float
        Wall times (s) of IRF datasets reduced outside the maps (the reused ones).

    Returns
    -------
    table : `~astropy.table.Table`
        ``time`` in ms; ``time_ratio`` relative to ``ring`` (background) or
        ``ring+excess`` (detection). Methods that never ran are left out.
    """
    fields, maps, bkg = tables["fields"], tables["maps"], tables["background_maps"]
    reduction = np.r_[np.asarray(maps["reduction_time"], float), reduction_times]
    rows = [dict(method="IRF dataset reduction", stage="reduction", unit="per map",
                 time=1e3 * finite_median(reduction), time_ratio=np.nan)]
    ring_bkg = finite_median(bkg["time"][bkg["method"] == "ring"])
    for method in background_methods:
        t = finite_median(bkg["time"][bkg["method"] == method])
        if np.isfinite(t):
            unit = "per aperture" if method == "aperture-onoff" else "per map"
            rows.append(dict(method=method, stage="background", unit=unit, time=1e3 * t,
                             time_ratio=t / ring_bkg))
    ring_det = finite_median(fields["time"][fields["method"] == "ring+excess"])
    for method in detection_methods:
        t = finite_median(fields["time"][fields["method"] == method])
        if np.isfinite(t):
            unit = "per fit" if method.startswith("fit<-") else "per map"
            rows.append(dict(method=method, stage="detection", unit=unit, time=1e3 * t,
                             time_ratio=t / ring_det))
    table = Table(rows=rows, names=list(rows[0]))
    table["time"].unit = "ms"
    return table

