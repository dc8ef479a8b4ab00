"""The methods the benchmark compares, each as a thin wrapper over gammapy or gammapy-cnn.

Background: `ring_dataset`, `fov_dataset`, ON/OFF `aperture_onoff` (with
`aperture_sum` for the apertures of every background image). Detection:
`find_ring_excess`, `find_tsmap`, `find_smoothed_counts`, `find_cnn`, and the
likelihood `fit_position` seeded from a method's candidate. Every finder
returns an (n, 3) array of x, y (pixels) and a significance or score.
"""

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from scipy.ndimage import gaussian_filter

from .maps import EXCLUSION_RADIUS

__all__ = [
    "CORRELATION_RADIUS",
    "FIT_CUTOUT",
    "PEAK_MIN_DISTANCE",
    "PEAK_THRESHOLD",
    "RING_R_IN",
    "RING_WIDTH",
    "SMOOTH_LEVEL",
    "SMOOTH_SIGNAL",
    "TS_KERNEL_WIDTH",
    "aperture_onoff",
    "aperture_sum",
    "find_cnn",
    "find_ring_excess",
    "find_smoothed_counts",
    "find_tsmap",
    "fit_position",
    "fov_dataset",
    "ring_dataset",
]

RING_R_IN = 0.5 * u.deg
RING_WIDTH = 0.3 * u.deg
#: Correlation radius of the ExcessMapEstimator after the ring background.
CORRELATION_RADIUS = 0.1 * u.deg
#: Detection threshold of every gammapy method (sqrt(TS) or significance).
PEAK_THRESHOLD = 5.0
PEAK_MIN_DISTANCE = 0.1 * u.deg
TS_KERNEL_WIDTH = 0.3 * u.deg
#: Width of the square cutout `fit_position` fits on.
FIT_CUTOUT = 1.0 * u.deg
#: Gaussian widths of the smoothed-counts signal and of its local level.
SMOOTH_SIGNAL = 0.05 * u.deg
SMOOTH_LEVEL = 0.5 * u.deg


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


def _peak_candidates(image_map, threshold=PEAK_THRESHOLD):
    """Peaks of a significance map above ``threshold`` as (n, 3) x, y, value; best first."""
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
    return _peak_candidates(sqrt_ts), sqrt_ts


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
    return _peak_candidates(estimator.run(fov)["sqrt_ts"])


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
    return _peak_candidates(Map.from_geom(geom, data=significance))


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
    from regions import CircleSkyRegion

    from ..analysis.fitting import fit_point_sources, point_source_models

    image = reference.counts.geom.to_image()
    seed = SkyCoord.from_pixel(x, y, image.wcs, origin=0)
    data = reference.cutout(seed, width=u.Quantity(cutout, "deg"), name=f"{reference.name}-fit")
    geom = data.counts.geom
    if other_sources:
        coords = SkyCoord.from_pixel(np.array([s["x"] for s in other_sources]),
                                     np.array([s["y"] for s in other_sources]), image.wcs, origin=0)
        excluded = geom.to_image().region_mask([CircleSkyRegion(c, EXCLUSION_RADIUS) for c in coords]).data
        data.mask_fit = Map.from_geom(geom, data=np.broadcast_to(~excluded, geom.data_shape))
    # the position may move within the match radius (0.3 deg) of the seed
    models = point_source_models(seed, names=["candidate"], position_range=0.3 * u.deg)
    data, result = fit_point_sources(data, models, fit=Fit(optimize_opts={"print_level": 0}),
                                     covariance=False)
    spatial, spectral = models[0].spatial_model, models[0].spectral_model
    stat = data.stat_sum()
    amplitude = spectral.amplitude.value
    spectral.amplitude.value = 0
    stat_null = data.stat_sum()
    spectral.amplitude.value = amplitude
    px, py = image.to_image().coord_to_pix(SkyCoord(spatial.lon_0.quantity, spatial.lat_0.quantity,
                                                     frame="icrs"))
    return dict(x=float(np.ravel(px)[0]), y=float(np.ravel(py)[0]), sqrt_ts=float(np.sqrt(max(stat_null - stat, 0))),
                success=bool(result.success))

