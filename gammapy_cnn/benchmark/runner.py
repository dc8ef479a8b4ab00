"""`run_benchmark`: simulate the test set, run every method on every map, summarise.

Each map goes through `_run_map`, which appends one record per source, field,
map and aperture and method; the summaries of `.metrics` then reduce the
records to one row per method.
"""

import datetime
import time
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table

from ..analysis.maps import energy_integrated_image
from ..utils import machine_info
from . import methods
from .maps import REFERENCE_POINTING, simulate_benchmark_map
from .metrics import (
    MATCH_RADIUS,
    aperture_summary,
    background_summary,
    detection_summary,
    localisation_summary,
    match_candidates,
    timing_summary,
)
from .report import BenchmarkResult

__all__ = [
    "BENCHMARK_SEED",
    "DEFAULT_SLOW_MAPS",
    "EMPTY_APERTURE",
    "EMPTY_APERTURE_OFFSET",
    "EMPTY_APERTURES_PER_MAP",
    "QUICK_MAPS",
    "QUICK_SLOW_MAPS",
    "SOURCE_APERTURE",
    "TRAINING_SEEDS",
    "run_benchmark",
]

#: Default seed of the held-out test set.
BENCHMARK_SEED = 20261125
#: Seeds of the shipped networks' training files (1001, 1002; see networks/recipes) and of
#: the finder's score calibration (1003); refused, the test set must be held out.
TRAINING_SEEDS = (1001, 1002, 1003)
#: Aperture around each true source for the background bias.
SOURCE_APERTURE = 0.2 * u.deg
#: Random apertures of the source-free maps for the empty-field significance.
EMPTY_APERTURE = 0.1 * u.deg
EMPTY_APERTURES_PER_MAP = 20
#: Random empty-field apertures are drawn within this offset (the sources' range).
EMPTY_APERTURE_OFFSET = 2.0 * u.deg
QUICK_MAPS = 12
QUICK_SLOW_MAPS = 2
DEFAULT_SLOW_MAPS = 30


def run_benchmark(n=None, irf=None, seed=BENCHMARK_SEED, quick=False, cleaners=("default", "original"),
                  finders=("default", "original"), n_slow=None, fit_seeds=None, output=None,
                  progress=True, scenario=None, command=None, reduce_per_map=False):
    """Compare the CNN methods with gammapy's on a held-out simulated test set.

    Parameters
    ----------
    n : int, optional
        Number of maps. Default 300, or 12 with ``quick``.
    irf : str or `~pathlib.Path`, optional
        IRF name or GADF file; overrides the scenario's (``default-z20``).
    seed : int
        Seed of the test set; the training seeds (1001, 1002) are refused.
    quick : bool
        Few maps, TS map and fits on 2 maps: a smoke run of a few minutes.
    cleaners, finders : sequence of str or `~pathlib.Path`
        Background and finder networks (shipped names or ``.keras`` files).
        The finders refine their candidates over the first cleaner's
        background.
    n_slow : int, optional
        The TS map and the fits run on the first ``n_slow`` maps only
        (default 30, or 2 with ``quick``; 0 skips them).
    fit_seeds : sequence of str, optional
        Detection methods whose candidates seed the likelihood fits. Default:
        ``ring+excess`` and the first CNN finder.
    output : str or `~pathlib.Path`, optional
        Directory for the Markdown, ECSV tables and figures.
    progress : bool
        Show a progress bar.
    scenario : `~gammapy_cnn.simulation.Scenario`, optional
        Default: the ``benchmark`` preset.
    command : str, optional
        Command line recorded in the report.
    reduce_per_map : bool
        Reduce an IRF dataset at every map's own pointing (~0.5 s per map)
        instead of reusing one per IRF, scaled to the livetime (see
        `simulate_benchmark_map`); the results are the same up to the sky
        coordinates.

    Returns
    -------
    result : `BenchmarkResult`
    """
    from tqdm.auto import tqdm

    from ..finders import CNNSourceFinder
    from ..makers import CNNBackgroundMaker
    from ..simulation import Scenario
    from ..simulation.batch import get_template

    if n is None:
        n = QUICK_MAPS if quick else 300
    if int(n) < 1:
        raise ValueError(f"n must be a positive number of maps, got {n}")
    n = int(n)
    if int(seed) in TRAINING_SEEDS:
        raise ValueError(f"seed {seed} made the shipped networks' training or calibration set; "
                         f"the benchmark needs held-out maps (default seed {BENCHMARK_SEED})")
    if n_slow is None:
        n_slow = QUICK_SLOW_MAPS if quick else DEFAULT_SLOW_MAPS
    if int(n_slow) < 0:
        raise ValueError(f"n_slow must be >= 0, got {n_slow}")
    n_slow = min(int(n_slow), n)
    cleaners, finders = [str(c) for c in cleaners], [str(f) for f in finders]
    for kind, names in (("cleaner", cleaners), ("finder", finders)):
        labels = [_network_label(x) for x in names]
        if len(set(labels)) != len(labels):
            raise ValueError(f"two {kind} networks share the label among {labels}; rename a file")

    makers = {_network_label(c): CNNBackgroundMaker(c) for c in cleaners}
    background_net = cleaners[0] if cleaners else "default"
    finder_objs = {_network_label(f): CNNSourceFinder(f, background_network=background_net) for f in finders}
    detection_methods = list(finder_objs) + ["ring+excess", "smoothed-counts"]
    if n_slow:
        detection_methods.append("tsmap")
    if fit_seeds is None:
        fit_seeds = ["ring+excess"] + list(finder_objs)[:1]
    for name in fit_seeds:
        if name not in detection_methods:
            raise ValueError(f"fit seed {name!r} is not one of the detection methods {detection_methods}")
    fit_methods = [f"fit<-{name}" for name in fit_seeds] if n_slow else []
    background_methods = (["true-background", "irf-template", "ring", "fov"] + list(makers)
                          + ["aperture-onoff"])

    networks = {}
    for kind, label, obj in ([("cleaner", k, v) for k, v in makers.items()]
                             + [("finder", k, v) for k, v in finder_objs.items()]):
        net = obj.network_  # load now: loading is not part of the per-map time
        networks[f"{kind} {label}"] = f"{net.card.get('architecture')} ({Path(str(net.path)).name}, " \
                          f"sha256 {str(net.card.get('sha256', ''))[:12]})"
        if isinstance(obj, CNNSourceFinder) and obj.background_maker is not None:
            obj.background_maker.network_  # noqa: B018

    scn = scenario if scenario is not None else Scenario.preset("benchmark")
    if irf is not None:
        scn = Scenario.from_dict({**scn.model_dump(mode="json"), "irf": [str(irf)]})
    templates = [get_template(name, scn.geometry) for name in scn.irf]
    references, reduction_times = [None] * len(templates), []
    if not reduce_per_map:
        for k, tpl in enumerate(templates):
            with _Timer() as t:
                references[k] = tpl.reference_dataset(REFERENCE_POINTING, 1 * u.s)
            reduction_times.append(t.seconds)

    records = {k: [] for k in ("sources", "fields", "maps", "background_maps", "apertures",
                               "empty_apertures")}
    example = {}
    wall_start = time.perf_counter()
    first = True
    for index in tqdm(range(n), desc="benchmark", unit="map", disable=not progress):
        bmap = _simulate_map(templates, references, scn, seed, index)
        if first:
            # tf.function tracing and lazy imports would be billed to the first map
            for obj in list(makers.values()) + list(finder_objs.values()):
                obj.run(bmap.dataset)
            methods.find_ring_excess(methods.ring_dataset(bmap))
            first = False
        _run_map(bmap, seed, makers, finder_objs, index < n_slow, fit_seeds, records, example)
    wall = time.perf_counter() - wall_start

    tables = {k: Table(rows=v, names=list(v[0])) if v else Table() for k, v in records.items()}
    tables["detection"] = detection_summary(tables, detection_methods + fit_methods)
    tables["detection_subset"] = (
        detection_summary(tables, detection_methods + fit_methods, max_map=n_slow)
        if n_slow else Table()
    )
    tables["localisation"] = localisation_summary(tables["sources"], detection_methods + fit_methods)
    tables["background"] = background_summary(tables, background_methods)
    tables["aperture"] = aperture_summary(tables["apertures"], background_methods)
    tables["timing"] = timing_summary(tables, detection_methods + fit_methods, background_methods,
                                       reduction_times)
    meta = dict(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        command=command or f"run_benchmark(n={n}, irf={irf!r}, seed={seed}, quick={quick})",
        irf=", ".join(scn.irf), seed=int(seed), n_maps=n, n_slow=n_slow,
        networks="; ".join(f"`{k}`: {v}" for k, v in networks.items()) or "none",
        versions=_versions(), wall_time_s=wall, **machine_info(),
        reduction=("reduced at every map's pointing" if reduce_per_map else
                   "one per IRF reduced once (1 s), scaled to each map's livetime, on the tangent "
                   f"plane of RA {REFERENCE_POINTING.ra.deg:.3f}, Dec {REFERENCE_POINTING.dec.deg:.3f} deg"),
    )
    result = BenchmarkResult(tables=tables, meta=meta, example=example)
    if output is not None:
        result.write(output)
    return result


def _simulate_map(templates, references, scenario, seed, index):
    """Simulate map ``index`` with the template (and reused IRF dataset) of its IRF."""
    if len(templates) == 1:
        return simulate_benchmark_map(templates[0], scenario, seed, index, references[0])
    # several IRFs: the map's IRF is drawn inside scenario.sample; draw it once to pick the template
    from ..simulation.batch import map_rng

    k = scenario.sample(map_rng(seed, index)).irf_index
    return simulate_benchmark_map(templates[k], scenario, seed, index, references[k])


def _run_map(bmap, seed, makers, finders, slow, fit_seeds, records, example):
    """Run every method on one map and append its records."""
    binsz = bmap.binsz
    counts = bmap.counts_image
    mask = bmap.mask
    truth_xy = bmap.source_xy()
    match_pix = MATCH_RADIUS.to_value("deg") / binsz
    p = bmap.params
    records["maps"].append(dict(map_index=bmap.index, livetime=p.livetime, n_sources=len(bmap.sources),
                                reduction_time=bmap.reduction_time))

    # background methods: 2D background images
    backgrounds, times = {}, {}
    backgrounds["true-background"] = bmap.background
    backgrounds["irf-template"] = _energy_integrated(bmap.reference.background)
    with _Timer() as t:
        ring = methods.ring_dataset(bmap)
    backgrounds["ring"], times["ring"] = _energy_integrated(ring.npred_background()), t.seconds
    with _Timer() as t:
        fov = methods.fov_dataset(bmap)
    backgrounds["fov"], times["fov"] = _energy_integrated(fov.npred_background()), t.seconds
    for label, maker in makers.items():
        with _Timer() as t:
            out = maker.run(bmap.dataset)
        backgrounds[label], times[label] = _energy_integrated(out.npred_background()), t.seconds
    true_total = float((bmap.background * mask).sum())
    for method, image in backgrounds.items():
        records["background_maps"].append(dict(
            map_index=bmap.index, method=method, livetime=p.livetime,
            ratio=float((image * mask).sum()) / true_total, time=times.get(method, np.nan)))

    acceptance = backgrounds["irf-template"]
    excl = np.asarray(bmap.exclusion.data, bool) & mask
    r_src = SOURCE_APERTURE.to_value("deg") / binsz
    # the ON/OFF annulus is the ring of the ring method
    r_in = methods.RING_R_IN.to_value("deg") / binsz
    r_out = (methods.RING_R_IN + methods.RING_WIDTH).to_value("deg") / binsz
    with _Timer() as t_onoff:
        onoff = [methods.aperture_onoff(counts, acceptance, excl, s["x"], s["y"], r_src, r_in, r_out)
                 for s in bmap.sources]
    for k, src in enumerate(bmap.sources):
        n_on = methods.aperture_sum(counts, src["x"], src["y"], r_src)
        signal = methods.aperture_sum(bmap.signal, src["x"], src["y"], r_src)
        values = {m: methods.aperture_sum(img, src["x"], src["y"], r_src) for m, img in backgrounds.items()}
        values["aperture-onoff"] = onoff[k][1] * onoff[k][2]
        for method, b in values.items():
            records["apertures"].append(dict(
                map_index=bmap.index, source=k, flux=src["flux"], livetime=p.livetime, method=method,
                n_on=n_on, background=b, signal=signal,
                bias=(n_on - b) / signal - 1 if signal > 0 else np.nan))
    if bmap.sources:
        records["background_maps"].append(dict(
            map_index=bmap.index, method="aperture-onoff", livetime=p.livetime, ratio=np.nan,
            time=t_onoff.seconds / len(bmap.sources)))

    if not bmap.sources:
        _empty_apertures(bmap, seed, counts, backgrounds, acceptance, excl, records, r_in, r_out)

    # detection methods: candidates (x, y, value)
    candidates, det_times = {}, {}
    for label, finder in finders.items():
        with _Timer() as t:
            candidates[label] = methods.find_cnn(finder, bmap.dataset)
        det_times[label] = t.seconds
    with _Timer() as t:
        candidates["ring+excess"], ring_ts = methods.find_ring_excess(ring)
    det_times["ring+excess"] = times["ring"] + t.seconds
    with _Timer() as t:
        candidates["smoothed-counts"] = methods.find_smoothed_counts(counts, binsz, mask)
    det_times["smoothed-counts"] = t.seconds
    if slow:
        with _Timer() as t:
            candidates["tsmap"] = methods.find_tsmap(fov)
        det_times["tsmap"] = times["fov"] + t.seconds

    for method, cands in candidates.items():
        errors, matched, n_false = match_candidates(cands, truth_xy, match_pix)
        _record_detection(records, bmap, method, errors * binsz, len(cands), n_false,
                          det_times[method])
        candidates[method] = (cands, matched)

    if slow and bmap.sources:
        for seed_method in fit_seeds:
            cands, matched = candidates[seed_method]
            errors = np.full(len(bmap.sources), np.nan)
            fit_times = []
            for k, src in enumerate(bmap.sources):
                if matched[k] < 0:
                    continue  # no candidate of this method to start from
                others = [s for j, s in enumerate(bmap.sources) if j != k]
                with _Timer() as t:
                    fit = methods.fit_position(bmap.reference, cands[matched[k], 0], cands[matched[k], 1], others)
                fit_times.append(t.seconds)
                error = np.hypot(fit["x"] - src["x"], fit["y"] - src["y"])
                if fit["sqrt_ts"] >= methods.PEAK_THRESHOLD and error <= match_pix:
                    errors[k] = error
            _record_detection(records, bmap, f"fit<-{seed_method}", errors * binsz, len(fit_times),
                              np.nan, np.median(fit_times) if fit_times else np.nan)

    if not example and _is_example_map(bmap):
        example.update(_example_images(bmap, counts, makers, ring_ts, candidates))


def _record_detection(records, bmap, method, errors_deg, n_candidates, n_false, seconds):
    """Append one ``sources`` record per true source and one ``fields`` record of a detection method."""
    p = bmap.params
    for k, src in enumerate(bmap.sources):
        records["sources"].append(dict(
            map_index=bmap.index, source=k, method=method, flux=src["flux"], livetime=p.livetime,
            extension=src["extension"], found=bool(np.isfinite(errors_deg[k])),
            error=float(errors_deg[k])))
    records["fields"].append(dict(
        map_index=bmap.index, method=method, livetime=p.livetime, n_sources=len(bmap.sources),
        n_candidates=int(n_candidates), n_false=float(n_false), time=float(seconds)))


def _empty_apertures(bmap, seed, counts, backgrounds, acceptance, excl, records, r_in, r_out):
    """(N - B) / sqrt(B) in random 0.1 deg apertures of a source-free map, per method."""
    rng = np.random.default_rng([int(seed), int(bmap.index), 7])
    binsz = bmap.binsz
    half = (counts.shape[0] - 1) / 2
    radius = np.sqrt(rng.uniform(0, 1, EMPTY_APERTURES_PER_MAP)) * EMPTY_APERTURE_OFFSET.to_value("deg")
    angle = rng.uniform(0, 2 * np.pi, EMPTY_APERTURES_PER_MAP)
    xs = half + radius * np.cos(angle) / binsz
    ys = half + radius * np.sin(angle) / binsz
    r_ap = EMPTY_APERTURE.to_value("deg") / binsz
    for k, (x, y) in enumerate(zip(xs, ys)):
        n_on = methods.aperture_sum(counts, x, y, r_ap)
        values = {m: methods.aperture_sum(img, x, y, r_ap) for m, img in backgrounds.items()}
        _, n_off, alpha = methods.aperture_onoff(counts, acceptance, excl, x, y, r_ap, r_in, r_out)
        values["aperture-onoff"] = alpha * n_off
        for method, b in values.items():
            records["empty_apertures"].append(dict(
                map_index=bmap.index, aperture=k, method=method, livetime=bmap.params.livetime,
                n_on=n_on, background=b,
                significance=(n_on - b) / np.sqrt(b) if b > 0 else np.nan))


def _is_example_map(bmap):
    """Whether the map is worth the example figure: a bright source (>= 0.3 Crab) in >= 100 s."""
    return any(s["flux"] >= 0.3 for s in bmap.sources) and bmap.params.livetime >= 100


def _example_images(bmap, counts, makers, ring_ts, candidates):
    """Images, truth and candidates of one map for the example figure."""
    out = dict(map_index=bmap.index, livetime=bmap.params.livetime, counts=counts, binsz=bmap.binsz,
               ring_sqrt_ts=np.asarray(ring_ts.data, float).reshape(counts.shape),
               sources=bmap.source_xy(), fluxes=[s["flux"] for s in bmap.sources],
               candidates={m: np.asarray(c[0])[:, :2] for m, c in candidates.items()})
    if makers:
        label, maker = next(iter(makers.items()))
        out["cleaned"] = np.asarray(maker.clean(bmap.dataset).data, float)
        out["cleaner"] = label
    return out


def _network_label(name):
    """Method label of a network: ``cnn:`` and its shipped name or file stem."""
    path = Path(str(name))
    return f"cnn:{path.stem if path.suffix == '.keras' else name}"


def _versions():
    """Versions of gammapy-cnn and of the packages that set its speed and numbers."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    out = [f"gammapy-cnn {__version__}"]
    for name in ("gammapy", "numpy", "astropy", "tensorflow-cpu", "tensorflow", "keras"):
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return ", ".join(out)


class _Timer:
    """Context manager measuring wall time; ``seconds`` is set on exit."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *args):
        self.seconds = time.perf_counter() - self.start


def _energy_integrated(m):
    """Energy-integrated 2D array of a map (`energy_integrated_image`'s data, as (ny, nx))."""
    return energy_integrated_image(m).data.reshape(m.data.shape[-2:])

