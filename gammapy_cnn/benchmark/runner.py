"""Benchmark: the CNN methods beside the gammapy methods users know, on the same maps.

`run_benchmark` simulates a held-out test set (scenario preset ``benchmark``,
seed 20261125, disjoint from the training seeds) with `gammapy_cnn.simulation`
and runs every method on the same maps, in the same process:

Background estimation
    ``cnn:NAME`` (`~gammapy_cnn.CNNBackgroundMaker`, counts only), ``ring``
    (`~gammapy.makers.RingBackgroundMaker` on the energy-integrated IRF
    dataset), ``fov`` (`~gammapy.makers.FoVBackgroundMaker`, ``scale``),
    ``irf-template`` (the IRF background as is, to show how wrong an
    unnormalised template is), ``aperture-onoff`` (ON/OFF aperture photometry
    with an OFF annulus 0.5-0.8 deg around the aperture, the IRF acceptance
    for alpha, `~gammapy.stats.WStatCountsStatistic`; gammapy's
    `~gammapy.makers.ReflectedRegionsBackgroundMaker` needs an event list,
    which the fast simulated maps do not have) and ``true-background``
    (the true expected background: the reference every other method is
    measured against, not a method).

Detection and localisation
    ``cnn:NAME`` (`~gammapy_cnn.CNNSourceFinder`), ``ring+excess``
    (ring background, `~gammapy.estimators.ExcessMapEstimator` with 0.1 deg
    correlation radius, `~gammapy.estimators.utils.find_peaks` at
    sqrt(TS) 5), ``tsmap`` (`~gammapy.estimators.TSMapEstimator` over the
    FoV-normalised IRF background, find_peaks at sqrt(TS) 5),
    ``smoothed-counts`` (template-free: 0.05 deg Gaussian-smoothed counts
    over a 0.5 deg Gaussian-smoothed local level, peaks at 5 sigma; the
    floor any method must beat) and ``fit<-METHOD`` (3D likelihood fit,
    gammapy `~gammapy.modeling.Fit`, of a point source with a power law and
    free position on the full IRF dataset with a free background norm,
    seeded from METHOD's candidate nearest to the true source).

The TS map and the fits take seconds per map; they run on the first
``n_slow`` maps only, and the detection table is also given restricted to
those maps so that every method is compared on the same ones.

The ring and FoV methods and the ON/OFF apertures need an exclusion mask;
they get the true source positions (radius 0.3 deg), as an analysis of known
sources would use a catalogue. The CNN methods get nothing but counts. This
favours the gammapy methods.

Positions are compared in pixels of the map's TAN projection (separations
below 3 deg, where the projection distorts lengths by less than 0.1%).

The simulated maps do not depend on the pointing in pixel space, so one IRF
dataset per response (`~gammapy_cnn.simulation.SimulationTemplate.reference_dataset`,
1 s) is reduced once, scaled to each map's livetime and used on the tangent
plane of one reference pointing; the reduction time is measured and
reported. ``reduce_per_map=True`` reduces one per map at its own pointing.
"""

import datetime
import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table, vstack
from scipy.ndimage import gaussian_filter

__all__ = [
    "BENCHMARK_SEED",
    "TRAINING_SEEDS",
    "BenchmarkMap",
    "BenchmarkResult",
    "run_benchmark",
    "simulate_benchmark_map",
    "scaled_reference",
    "exclusion_mask",
    "ring_dataset",
    "fov_dataset",
    "find_ring_excess",
    "find_tsmap",
    "find_smoothed_counts",
    "find_cnn",
    "fit_position",
    "aperture_sum",
    "aperture_onoff",
    "match_candidates",
    "containment_radius",
    "table_to_markdown",
    "pivot_localisation",
]

log = logging.getLogger(__name__)

#: Default seed of the held-out test set.
BENCHMARK_SEED = 20261125
#: Seeds of the shipped networks' training files (1001, 1002; see networks/recipes) and of
#: the finder's score calibration (1003); refused, the test set must be held out.
TRAINING_SEEDS = (1001, 1002, 1003)
MATCH_RADIUS = 0.3 * u.deg
EXCLUSION_RADIUS = 0.3 * u.deg
SOURCE_APERTURE = 0.2 * u.deg
EMPTY_APERTURE = 0.1 * u.deg
EMPTY_APERTURES_PER_MAP = 20
#: Random empty-field apertures are drawn within this offset (the sources' range).
EMPTY_APERTURE_OFFSET = 2.0 * u.deg
RING_R_IN = 0.5 * u.deg
RING_WIDTH = 0.3 * u.deg
CORRELATION_RADIUS = 0.1 * u.deg
PEAK_THRESHOLD = 5.0
PEAK_MIN_DISTANCE = 0.1 * u.deg
TS_KERNEL_WIDTH = 0.3 * u.deg
FIT_CUTOUT = 1.0 * u.deg
SMOOTH_SIGNAL = 0.05 * u.deg
SMOOTH_LEVEL = 0.5 * u.deg
#: Pointing of the reused IRF datasets (any pointing gives the same pixels).
REFERENCE_POINTING = SkyCoord(83.633, 22.015, unit="deg")
QUICK_MAPS = 12
QUICK_SLOW_MAPS = 2
DEFAULT_SLOW_MAPS = 30


# --- one map ----------------------------------------------------------------


@dataclass
class BenchmarkMap:
    """One simulated test map with its truth and the datasets the methods use.

    Attributes
    ----------
    index : int
        Map index in the test set (its random stream is ``[seed, index]``).
    params : `~gammapy_cnn.simulation.MapParameters`
    counts : `~numpy.ndarray`
        (n_energy, ny, nx) observed counts.
    signal, background : `~numpy.ndarray`
        (ny, nx) true expected source and background counts, energy-integrated.
    sources : list of dict
        True sources (``x``, ``y`` in pixels, ``flux`` in Crab, ...).
    dataset : `~gammapy.datasets.MapDataset`
        Counts only: what the CNN methods get.
    reference : `~gammapy.datasets.MapDataset`
        The same counts in the full IRF dataset (exposure, PSF, energy
        dispersion, IRF background): what the gammapy methods get.
    exclusion : `~gammapy.maps.WcsNDMap`
        2D exclusion mask (True outside 0.3 deg of every true source).
    mask : `~numpy.ndarray`
        (ny, nx) bool safe mask (where the IRF background is positive).
    reduction_time : float
        Wall time (s) of building ``reference`` (IRF dataset reduction).
    """

    index: int
    params: object
    counts: np.ndarray
    signal: np.ndarray
    background: np.ndarray
    sources: list
    dataset: object
    reference: object
    exclusion: object
    mask: np.ndarray
    reduction_time: float

    @property
    def livetime(self):
        return self.params.livetime * u.s

    @property
    def counts_image(self):
        return self.counts.sum(axis=0).astype(float)

    @property
    def binsz(self):
        return float(np.abs(self.dataset.counts.geom.pixel_scales[0].to_value("deg")))

    def source_xy(self):
        """(n, 2) pixel positions of the true sources."""
        return np.array([[s["x"], s["y"]] for s in self.sources]).reshape(-1, 2)


def simulate_benchmark_map(template, scenario, seed, index, reference=None):
    """Simulate map ``index`` of a test set and build its datasets.

    The maps are the ones ``gammapy-cnn simulate --scenario ... --seed SEED``
    writes (same random stream per map).

    Parameters
    ----------
    template : `~gammapy_cnn.simulation.SimulationTemplate`
    scenario : `~gammapy_cnn.simulation.Scenario`
    seed, index : int
    reference : `~gammapy.datasets.MapDataset`, optional
        A 1 s IRF dataset of ``template`` (`reference_dataset`) to reuse,
        scaled to the map's livetime. The map is then analysed on that
        dataset's tangent plane instead of its own pointing's: the same
        pixels, since the simulated maps do not depend on the pointing in
        pixel space. Default: reduce a dataset at the map's pointing (~0.5 s).

    Returns
    -------
    bmap : `BenchmarkMap`
    """
    from gammapy.datasets import MapDataset
    from gammapy.maps import Map

    from .simulation.batch import map_rng

    rng = map_rng(seed, index)
    params = scenario.sample(rng)
    sim = template.simulate(params, rng)
    background = template.background(
        params.livetime, params.background_norm, params.background_tilt,
        params.background_gradient, params.gradient_angle,
    )
    if reference is None:
        pointing = SkyCoord(params.pointing_ra, params.pointing_dec, unit="deg")
        start = time.perf_counter()
        reference = template.reference_dataset(pointing, params.livetime * u.s)
        reduction_time = time.perf_counter() - start
    else:
        reference = scaled_reference(reference, params.livetime * u.s, name=f"map{index}-irf")
        reduction_time = np.nan
    geom = reference.counts.geom
    counts_map = Map.from_geom(geom, data=sim.counts.astype(np.float32))
    reference.counts = counts_map
    mask = template.mask.copy()
    safe = Map.from_geom(geom, data=np.broadcast_to(mask, geom.data_shape).copy())
    reference.mask_safe = safe
    dataset = MapDataset(counts=counts_map.copy(), mask_safe=safe.copy(), name=f"map{index}")
    return BenchmarkMap(
        index=index, params=params, counts=sim.counts, signal=sim.signal.sum(axis=0),
        background=background.sum(axis=0), sources=sim.sources, dataset=dataset,
        reference=reference, exclusion=exclusion_mask(geom, sim.sources), mask=mask,
        reduction_time=reduction_time,
    )


def scaled_reference(reference, livetime, name=None):
    """Copy of a 1 s IRF dataset for another livetime (exposure and background scale with it).

    Parameters
    ----------
    reference : `~gammapy.datasets.MapDataset`
        Made by `~gammapy_cnn.simulation.SimulationTemplate.reference_dataset` with 1 s.
    livetime : `~astropy.units.Quantity`
    name : str, optional

    Returns
    -------
    dataset : `~gammapy.datasets.MapDataset`
    """
    factor = float(u.Quantity(livetime, "s").value)
    if not factor > 0:
        raise ValueError(f"livetime must be positive, got {livetime}")
    out = reference.copy(name=name)
    out.exposure = reference.exposure * factor
    out.background = reference.background * factor
    return out


def exclusion_mask(geom, sources, radius=EXCLUSION_RADIUS):
    """2D exclusion mask, True outside ``radius`` of every source.

    Parameters
    ----------
    geom : `~gammapy.maps.WcsGeom`
    sources : list of dict
        With pixel ``x``, ``y``.
    radius : `~astropy.units.Quantity`

    Returns
    -------
    mask : `~gammapy.maps.WcsNDMap`
    """
    from gammapy.maps import Map

    image = geom.to_image()
    binsz = float(np.abs(image.pixel_scales[0].to_value("deg")))
    ny, nx = image.data_shape
    yy, xx = np.mgrid[:ny, :nx]
    keep = np.ones((ny, nx), bool)
    r = u.Quantity(radius, "deg").value / binsz
    for src in sources:
        keep &= (xx - src["x"]) ** 2 + (yy - src["y"]) ** 2 > r**2
    return Map.from_geom(image, data=keep)


# --- background methods -------------------------------------------------------


def ring_dataset(bmap):
    """Ring background on the energy-integrated IRF dataset.

    Returns
    -------
    dataset : `~gammapy.datasets.MapDatasetOnOff`
        2D; ``npred_background()`` is alpha times the OFF counts.
    """
    from gammapy.makers import RingBackgroundMaker

    maker = RingBackgroundMaker(r_in=RING_R_IN, width=RING_WIDTH, exclusion_mask=bmap.exclusion)
    # near the map edges a ring can hold no OFF pixel: alpha is NaN there, by design
    with np.errstate(invalid="ignore", divide="ignore"):
        return maker.run(bmap.reference.to_image())


def fov_dataset(bmap):
    """IRF background scaled to the counts outside the exclusion mask (3D)."""
    from gammapy.makers import FoVBackgroundMaker

    return FoVBackgroundMaker(method="scale", exclusion_mask=bmap.exclusion).run(bmap.reference)


def aperture_sum(image, x, y, radius_pix):
    """Sum of ``image`` in a circle of ``radius_pix`` pixels around (x, y)."""
    ny, nx = image.shape
    r = int(np.ceil(radius_pix)) + 1
    ys = slice(max(int(y) - r, 0), min(int(y) + r + 2, ny))
    xs = slice(max(int(x) - r, 0), min(int(x) + r + 2, nx))
    yy, xx = np.mgrid[ys, xs]
    inside = (xx - x) ** 2 + (yy - y) ** 2 <= radius_pix**2
    return float(image[ys, xs][inside].sum())


def aperture_onoff(counts, acceptance, exclusion, x, y, radius_pix, r_in_pix, r_out_pix):
    """ON/OFF aperture photometry with an OFF annulus around the aperture.

    Parameters
    ----------
    counts, acceptance : `~numpy.ndarray`
        (ny, nx) counts and relative background acceptance (IRF background).
    exclusion : `~numpy.ndarray`
        (ny, nx) bool, False where OFF counts must not be taken.
    x, y : float
        Aperture centre (pixels).
    radius_pix, r_in_pix, r_out_pix : float
        ON radius, OFF annulus inner and outer radius (pixels).

    Returns
    -------
    n_on, n_off, alpha : float
        ``alpha * n_off`` is the background in the aperture. ``alpha`` is NaN
        when the annulus holds no valid pixel.
    """
    ny, nx = counts.shape
    yy, xx = np.mgrid[:ny, :nx]
    d2 = (xx - x) ** 2 + (yy - y) ** 2
    on = d2 <= radius_pix**2
    off = (d2 >= r_in_pix**2) & (d2 <= r_out_pix**2) & exclusion
    a_on, a_off = acceptance[on].sum(), acceptance[off].sum()
    alpha = a_on / a_off if a_off > 0 else np.nan
    return float(counts[on].sum()), float(counts[off].sum()), float(alpha)


# --- detection methods ----------------------------------------------------------


def _peaks(image_map, threshold=PEAK_THRESHOLD):
    from gammapy.estimators.utils import find_peaks

    table = find_peaks(image_map, threshold=threshold, min_distance=PEAK_MIN_DISTANCE)
    if len(table) == 0:
        return np.zeros((0, 3))
    return np.column_stack([table["x"], table["y"], table["value"]]).astype(float)


def find_ring_excess(ring):
    """Candidates of ring background + ExcessMapEstimator (0.1 deg) + find_peaks.

    Parameters
    ----------
    ring : `~gammapy.datasets.MapDatasetOnOff`
        From `ring_dataset`.

    Returns
    -------
    candidates : `~numpy.ndarray`
        (n, 3): x, y (pixels), sqrt(TS); best first.
    sqrt_ts : `~gammapy.maps.WcsNDMap`
    """
    from gammapy.estimators import ExcessMapEstimator

    estimator = ExcessMapEstimator(correlation_radius=CORRELATION_RADIUS, selection_optional=[])
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN alpha at the edges (ring_dataset)
        sqrt_ts = estimator.run(ring)["sqrt_ts"]
    return _peaks(sqrt_ts), sqrt_ts


def find_tsmap(fov):
    """Candidates of TSMapEstimator (point source, index 2.5) + find_peaks.

    Parameters
    ----------
    fov : `~gammapy.datasets.MapDataset`
        IRF dataset with a normalised background (`fov_dataset`).

    Returns
    -------
    candidates : `~numpy.ndarray`
        (n, 3): x, y, sqrt(TS).
    """
    from gammapy.estimators import TSMapEstimator
    from gammapy.modeling.models import PointSpatialModel, PowerLawSpectralModel, SkyModel

    model = SkyModel(spatial_model=PointSpatialModel(), spectral_model=PowerLawSpectralModel(index=2.5))
    estimator = TSMapEstimator(kernel_model=model, kernel_width=TS_KERNEL_WIDTH, selection_optional=[],
                               sum_over_energy_groups=True)
    return _peaks(estimator.run(fov)["sqrt_ts"])


def find_smoothed_counts(counts, binsz, mask=None):
    """Template-free candidates: peaks of Gaussian-smoothed counts over a wide local level.

    The significance of a pixel is ``(s - b) / sqrt(b / (4 pi sigma^2))``
    with ``s`` the counts smoothed by a 0.05 deg Gaussian and ``b`` by a
    0.5 deg one (the local level, sources included).

    Parameters
    ----------
    counts : `~numpy.ndarray`
        (ny, nx) energy-integrated counts.
    binsz : float
        Pixel size in deg.
    mask : `~numpy.ndarray`, optional
        (ny, nx) bool valid pixels.

    Returns
    -------
    candidates : `~numpy.ndarray`
        (n, 3): x, y, significance.
    """
    from gammapy.maps import Map, WcsGeom

    counts = np.asarray(counts, float)
    mask = np.ones(counts.shape, bool) if mask is None else np.asarray(mask, bool)
    sigma = SMOOTH_SIGNAL.to_value("deg") / binsz
    wide = SMOOTH_LEVEL.to_value("deg") / binsz
    norm = gaussian_filter(mask.astype(float), wide, mode="constant")
    level = gaussian_filter(counts * mask, wide, mode="constant") / np.maximum(norm, 1e-9)
    smooth = gaussian_filter(counts * mask, sigma, mode="constant")
    # a 2D Gaussian kernel of width sigma sums the noise of 4 pi sigma^2 pixels
    significance = (smooth - level) / np.sqrt(np.maximum(level, 1e-3) / (4 * np.pi * sigma**2))
    significance = np.where(mask, significance, 0)
    ny, nx = counts.shape
    geom = WcsGeom.create(npix=(nx, ny), binsz=binsz, skydir=(0, 0), proj="TAN")
    return _peaks(Map.from_geom(geom, data=significance))


def find_cnn(finder, dataset):
    """Candidates of a `~gammapy_cnn.CNNSourceFinder`: (n, 3) x, y, score."""
    table = finder.run(dataset)
    if len(table) == 0:
        return np.zeros((0, 3))
    return np.column_stack([table["x"], table["y"], table["score"]]).astype(float)


def fit_position(reference, x, y, other_sources=(), cutout=FIT_CUTOUT):
    """3D likelihood fit of a point source with free position, seeded at pixel (x, y).

    The fit runs on a ``cutout``-wide square of the full IRF dataset, with a
    free FoV background norm and a power law (free amplitude and index).
    Other true sources inside the cutout are masked (0.3 deg).

    Parameters
    ----------
    reference : `~gammapy.datasets.MapDataset`
        Full IRF dataset with counts.
    x, y : float
        Seed position (pixels of ``reference``).
    other_sources : list of dict
        Sources to mask (pixel ``x``, ``y``).
    cutout : `~astropy.units.Quantity`

    Returns
    -------
    result : dict
        ``x``, ``y`` (pixels of ``reference``), ``sqrt_ts``, ``success``.
    """
    from gammapy.maps import Map
    from gammapy.modeling import Fit
    from gammapy.modeling.models import (
        FoVBackgroundModel,
        Models,
        PointSpatialModel,
        PowerLawSpectralModel,
        SkyModel,
    )

    image = reference.counts.geom.to_image()
    seed = SkyCoord.from_pixel(x, y, image.wcs, origin=0)
    data = reference.cutout(seed, width=u.Quantity(cutout, "deg"), name=f"{reference.name}-fit")
    geom = data.counts.geom
    if other_sources:
        coords = SkyCoord.from_pixel(np.array([s["x"] for s in other_sources]),
                                     np.array([s["y"] for s in other_sources]), image.wcs, origin=0)
        fit_mask = np.ones(geom.data_shape, bool)
        separation = geom.to_image().get_coord().skycoord
        for c in coords:
            fit_mask &= (separation.separation(c) > EXCLUSION_RADIUS)[None]
        data.mask_fit = Map.from_geom(geom, data=fit_mask)
    spatial = PointSpatialModel(lon_0=seed.icrs.ra, lat_0=seed.icrs.dec, frame="icrs")
    half = 0.3  # deg: the position may move within the match radius of the seed
    spatial.lon_0.min = seed.icrs.ra.deg - half / max(np.cos(seed.icrs.dec.rad), 0.1)
    spatial.lon_0.max = seed.icrs.ra.deg + half / max(np.cos(seed.icrs.dec.rad), 0.1)
    spatial.lat_0.min, spatial.lat_0.max = seed.icrs.dec.deg - half, seed.icrs.dec.deg + half
    spectral = PowerLawSpectralModel(index=2.5, amplitude="1e-12 cm-2 s-1 TeV-1", reference="1 TeV")
    source = SkyModel(spatial_model=spatial, spectral_model=spectral, name="candidate")
    data.models = Models([source, FoVBackgroundModel(dataset_name=data.name)])
    result = Fit(optimize_opts={"print_level": 0}).optimize(data)
    stat = data.stat_sum()
    amplitude = spectral.amplitude.value
    spectral.amplitude.value = 0
    stat_null = data.stat_sum()
    spectral.amplitude.value = amplitude
    px, py = image.to_image().coord_to_pix(SkyCoord(spatial.lon_0.quantity, spatial.lat_0.quantity,
                                                     frame="icrs"))
    return dict(x=float(np.ravel(px)[0]), y=float(np.ravel(py)[0]), sqrt_ts=float(np.sqrt(max(stat_null - stat, 0))),
                success=bool(result.success))


# --- metrics ----------------------------------------------------------------------


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


def _median(values):
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else np.nan


# --- the benchmark --------------------------------------------------------------------


def _network_label(name):
    path = Path(str(name))
    return f"cnn:{path.stem if path.suffix == '.keras' else name}"


def _bins(values):
    """Bin labels: the distinct values when there are few (choice scenarios), else decades."""
    values = np.asarray(values, float)
    distinct = np.unique(values)
    if len(distinct) <= 8:
        return values, distinct
    edges = 10 ** np.arange(np.floor(np.log10(values.min())), np.ceil(np.log10(values.max())) + 1)
    idx = np.clip(np.digitize(values, edges) - 1, 0, len(edges) - 2)
    centres = np.sqrt(edges[:-1] * edges[1:])
    return centres[idx], np.unique(centres[idx])


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
        _atomic_text(output / "benchmark.md", self.to_markdown())
        paths = [output / "benchmark.md"]
        for name, table in self.tables.items():
            path = output / f"{name}.ecsv"
            with _atomic(path) as tmp:
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


class _atomic:
    """Context manager giving a temporary path beside ``path``, moved onto it on success."""

    def __init__(self, path):
        self.path = Path(path)

    def __enter__(self):
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=self.path.suffix,
                                    dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, kind, value, traceback):
        if kind is None:
            # mkstemp creates 0600 files; give the result the usual permissions
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(self.tmp, 0o666 & ~mask)
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
        return False


def _atomic_text(path, text):
    with _atomic(path) as tmp:
        tmp.write_text(text)


def _machine():
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return dict(cpu=cpu, cores=os.cpu_count(), platform=platform.platform())


def _versions():
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    out = [f"gammapy-cnn {__version__}"]
    for name in ("gammapy", "numpy", "astropy", "tensorflow-cpu", "tensorflow", "keras"):
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return ", ".join(out)


class _Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *args):
        self.seconds = time.perf_counter() - self.start


def _image(m):
    """Energy-integrated 2D array of a map (any number of non-spatial axes)."""
    data = np.asarray(m.data, float)
    return data.reshape((-1,) + data.shape[-2:]).sum(axis=0)


def run_benchmark(n=None, irf=None, seed=BENCHMARK_SEED, quick=False, cleaners=("default", "seed"),
                  finders=("default", "seed"), n_slow=None, fit_seeds=None, output=None,
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

    from .finders import CNNSourceFinder
    from .makers import CNNBackgroundMaker
    from .simulation import Scenario
    from .simulation.batch import get_template

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
    finder_objs = {_network_label(f): CNNSourceFinder(f, background=background_net) for f in finders}
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
        net = obj.network  # load now: loading is not part of the per-map time
        networks[f"{kind} {label}"] = f"{net.card.get('architecture')} ({Path(str(net.path)).name}, " \
                          f"sha256 {str(net.card.get('sha256', ''))[:12]})"
        if isinstance(obj, CNNSourceFinder) and obj.background_maker is not None:
            obj.background_maker.network  # noqa: B018

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
        bmap = _simulate(templates, references, scn, seed, index)
        if first:
            # tf.function tracing and lazy imports would be billed to the first map
            for obj in list(makers.values()) + list(finder_objs.values()):
                obj.run(bmap.dataset)
            find_ring_excess(ring_dataset(bmap))
            first = False
        _run_map(bmap, seed, makers, finder_objs, index < n_slow, fit_seeds, records, example)
    wall = time.perf_counter() - wall_start

    tables = {k: Table(rows=v, names=list(v[0])) if v else Table() for k, v in records.items()}
    tables["detection"] = _detection_summary(tables, detection_methods + fit_methods)
    tables["detection_subset"] = (
        _detection_summary(tables, detection_methods + fit_methods, max_map=n_slow)
        if n_slow else Table()
    )
    tables["localisation"] = _localisation_summary(tables["sources"], detection_methods + fit_methods)
    tables["background"] = _background_summary(tables, background_methods)
    tables["aperture"] = _aperture_summary(tables["apertures"], background_methods)
    tables["timing"] = _timing_summary(tables, detection_methods + fit_methods, background_methods,
                                       reduction_times)
    meta = dict(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        command=command or f"run_benchmark(n={n}, irf={irf!r}, seed={seed}, quick={quick})",
        irf=", ".join(scn.irf), seed=int(seed), n_maps=n, n_slow=n_slow,
        networks="; ".join(f"`{k}`: {v}" for k, v in networks.items()) or "none",
        versions=_versions(), wall_time_s=wall, **_machine(),
        reduction=("reduced at every map's pointing" if reduce_per_map else
                   "one per IRF reduced once (1 s), scaled to each map's livetime, on the tangent "
                   f"plane of RA {REFERENCE_POINTING.ra.deg:.3f}, Dec {REFERENCE_POINTING.dec.deg:.3f} deg"),
    )
    result = BenchmarkResult(tables=tables, meta=meta, example=example)
    if output is not None:
        result.write(output)
    return result


def _simulate(templates, references, scenario, seed, index):
    if len(templates) == 1:
        return simulate_benchmark_map(templates[0], scenario, seed, index, references[0])
    # several IRFs: the map's IRF is drawn inside scenario.sample; draw it once to pick the template
    from .simulation.batch import map_rng

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
    backgrounds["irf-template"] = _image(bmap.reference.background)
    with _Timer() as t:
        ring = ring_dataset(bmap)
    backgrounds["ring"], times["ring"] = _image(ring.npred_background()), t.seconds
    with _Timer() as t:
        fov = fov_dataset(bmap)
    backgrounds["fov"], times["fov"] = _image(fov.npred_background()), t.seconds
    for label, maker in makers.items():
        with _Timer() as t:
            out = maker.run(bmap.dataset)
        backgrounds[label], times[label] = _image(out.npred_background()), t.seconds
    true_total = float((bmap.background * mask).sum())
    for method, image in backgrounds.items():
        records["background_maps"].append(dict(
            map_index=bmap.index, method=method, livetime=p.livetime,
            ratio=float((image * mask).sum()) / true_total, time=times.get(method, np.nan)))

    acceptance = backgrounds["irf-template"]
    excl = np.asarray(bmap.exclusion.data, bool) & mask
    r_src = SOURCE_APERTURE.to_value("deg") / binsz
    r_in, r_out = (RING_R_IN.to_value("deg") / binsz, (RING_R_IN + RING_WIDTH).to_value("deg") / binsz)
    with _Timer() as t_onoff:
        onoff = [aperture_onoff(counts, acceptance, excl, s["x"], s["y"], r_src, r_in, r_out)
                 for s in bmap.sources]
    for k, src in enumerate(bmap.sources):
        n_on = aperture_sum(counts, src["x"], src["y"], r_src)
        signal = aperture_sum(bmap.signal, src["x"], src["y"], r_src)
        values = {m: aperture_sum(img, src["x"], src["y"], r_src) for m, img in backgrounds.items()}
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
            candidates[label] = find_cnn(finder, bmap.dataset)
        det_times[label] = t.seconds
    with _Timer() as t:
        candidates["ring+excess"], ring_ts = find_ring_excess(ring)
    det_times["ring+excess"] = times["ring"] + t.seconds
    with _Timer() as t:
        candidates["smoothed-counts"] = find_smoothed_counts(counts, binsz, mask)
    det_times["smoothed-counts"] = t.seconds
    if slow:
        with _Timer() as t:
            candidates["tsmap"] = find_tsmap(fov)
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
                    fit = fit_position(bmap.reference, cands[matched[k], 0], cands[matched[k], 1], others)
                fit_times.append(t.seconds)
                error = np.hypot(fit["x"] - src["x"], fit["y"] - src["y"])
                if fit["sqrt_ts"] >= PEAK_THRESHOLD and error <= match_pix:
                    errors[k] = error
            _record_detection(records, bmap, f"fit<-{seed_method}", errors * binsz, len(fit_times),
                              np.nan, np.median(fit_times) if fit_times else np.nan)

    if not example and _is_example(bmap):
        example.update(_example(bmap, counts, makers, ring_ts, candidates))


def _record_detection(records, bmap, method, errors_deg, n_candidates, n_false, seconds):
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
        n_on = aperture_sum(counts, x, y, r_ap)
        values = {m: aperture_sum(img, x, y, r_ap) for m, img in backgrounds.items()}
        _, n_off, alpha = aperture_onoff(counts, acceptance, excl, x, y, r_ap, r_in, r_out)
        values["aperture-onoff"] = alpha * n_off
        for method, b in values.items():
            records["empty_apertures"].append(dict(
                map_index=bmap.index, aperture=k, method=method, livetime=bmap.params.livetime,
                n_on=n_on, background=b,
                significance=(n_on - b) / np.sqrt(b) if b > 0 else np.nan))


def _is_example(bmap):
    return any(s["flux"] >= 0.3 for s in bmap.sources) and bmap.params.livetime >= 100


def _example(bmap, counts, makers, ring_ts, candidates):
    out = dict(map_index=bmap.index, livetime=bmap.params.livetime, counts=counts, binsz=bmap.binsz,
               ring_sqrt_ts=np.asarray(ring_ts.data, float).reshape(counts.shape),
               sources=bmap.source_xy(), fluxes=[s["flux"] for s in bmap.sources],
               candidates={m: np.asarray(c[0])[:, :2] for m, c in candidates.items()})
    if makers:
        label, maker = next(iter(makers.items()))
        out["cleaned"] = np.asarray(maker.clean(bmap.dataset).data, float)
        out["cleaner"] = label
    return out


# --- summaries ---------------------------------------------------------------------


def _detection_summary(tables, methods, max_map=None):
    sources, fields = tables["sources"], tables["fields"]
    if max_map is not None:
        sources = sources[sources["map_index"] < max_map] if len(sources) else sources
        fields = fields[fields["map_index"] < max_map] if len(fields) else fields
    ring_time = _median(fields["time"][fields["method"] == "ring+excess"]) if len(fields) else np.nan
    rows = []
    for method in methods:
        f = fields[fields["method"] == method] if len(fields) else fields
        s = sources[sources["method"] == method] if len(sources) else sources
        empty = f[f["n_sources"] == 0] if len(f) else f
        time_ms = 1e3 * _median(f["time"]) if len(f) else np.nan
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


def _localisation_summary(sources, methods):
    rows = []
    if not len(sources):
        return Table()
    # per flux, per livetime, and per flux at each livetime (bin "flux@100 s")
    selections = [(column, np.ones(len(sources), bool), column) for column in ("flux", "livetime")]
    livetimes, distinct = _bins(sources["livetime"])
    selections += [(f"flux@{t:g} s", livetimes == t, "flux") for t in distinct]
    for bin_name, subset, column in selections:
        labels, values = _bins(sources[column])
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


def _background_summary(tables, methods):
    maps, apertures, empty = tables["background_maps"], tables["apertures"], tables["empty_apertures"]
    ring_time = _median(maps["time"][maps["method"] == "ring"]) if len(maps) else np.nan
    rows = []
    for method in methods:
        m = maps[maps["method"] == method] if len(maps) else maps
        a = apertures[apertures["method"] == method] if len(apertures) else apertures
        e = empty[empty["method"] == method] if len(empty) else empty
        sig = np.asarray(e["significance"], float) if len(e) else np.zeros(0)
        sig = sig[np.isfinite(sig)]
        time_ms = 1e3 * _median(m["time"]) if len(m) else np.nan
        rows.append(dict(
            method=method,
            ratio_median=_median(m["ratio"]) if len(m) else np.nan,
            ratio_p16=float(np.nanquantile(m["ratio"], 0.16)) if len(m) and np.isfinite(m["ratio"]).any() else np.nan,
            ratio_p84=float(np.nanquantile(m["ratio"], 0.84)) if len(m) and np.isfinite(m["ratio"]).any() else np.nan,
            n_apertures=len(a), aperture_bias=_median(a["bias"]) if len(a) else np.nan,
            n_empty_apertures=len(sig),
            empty_sig_mean=float(np.mean(sig)) if len(sig) else np.nan,
            empty_sig_std=float(np.std(sig)) if len(sig) else np.nan,
            time=time_ms,
            time_ratio=time_ms / (1e3 * ring_time) if ring_time else np.nan,
        ))
    table = Table(rows=rows, names=list(rows[0]))
    table["time"].unit = "ms"
    return table


def _aperture_summary(apertures, methods):
    if not len(apertures):
        return Table()
    labels, values = _bins(apertures["flux"])
    rows = []
    for method in methods:
        row = dict(method=method)
        for value in values:
            sel = (apertures["method"] == method) & (labels == value)
            row[f"bias_{value:g}"] = _median(apertures["bias"][sel])
        rows.append(row)
    return Table(rows=rows, names=list(rows[0]))


def _timing_summary(tables, detection_methods, background_methods, reduction_times=()):
    fields, maps, bkg = tables["fields"], tables["maps"], tables["background_maps"]
    reduction = np.r_[np.asarray(maps["reduction_time"], float), reduction_times]
    rows = [dict(method="IRF dataset reduction", stage="reduction", unit="per map",
                 time=1e3 * _median(reduction), time_ratio=np.nan)]
    ring_bkg = _median(bkg["time"][bkg["method"] == "ring"])
    for method in background_methods:
        t = _median(bkg["time"][bkg["method"] == method])
        if np.isfinite(t):
            unit = "per aperture" if method == "aperture-onoff" else "per map"
            rows.append(dict(method=method, stage="background", unit=unit, time=1e3 * t,
                             time_ratio=t / ring_bkg))
    ring_det = _median(fields["time"][fields["method"] == "ring+excess"])
    for method in detection_methods:
        t = _median(fields["time"][fields["method"] == method])
        if np.isfinite(t):
            unit = "per fit" if method.startswith("fit<-") else "per map"
            rows.append(dict(method=method, stage="detection", unit=unit, time=1e3 * t,
                             time_ratio=t / ring_det))
    table = Table(rows=rows, names=list(rows[0]))
    table["time"].unit = "ms"
    return table


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
        with _atomic(path) as tmp:
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
