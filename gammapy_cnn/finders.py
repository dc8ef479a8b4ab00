"""`CNNSourceFinder`: every source candidate of a counts map, localised and scored."""

import copy
import functools
import sys
import threading
import warnings

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Column, Table
from astropy.utils import lazyproperty
from gammapy.catalog import SourceCatalog, SourceCatalogObject
from gammapy.estimators import ESTIMATOR_REGISTRY
from gammapy.estimators.core import Estimator
from gammapy.modeling.models import (
    Models,
    PointSpatialModel,
    PowerLawSpectralModel,
    SkyModel,
)
from regions import CircleSkyRegion, PointSkyRegion, Regions
from scipy.ndimage import maximum_filter

from .makers import CNNBackgroundMaker, split_in_energy
from .networks import ORIGINAL, load_network
from .preprocessing import FINDER_STRIDE, native_images, normalise, original_stretch, pad
from .utils import NATIVE_BINSZ, NATIVE_NPIX

__all__ = ["CNNSourceFinder", "CandidateCatalog", "candidates_to_regions", "empty_candidates_table", "write_ds9"]

#: Radius of the local fit and of the aperture of the ``excess`` column.
FIT_RADIUS = 0.2 * u.deg
#: Candidates closer than this after refinement are merged (the best one is kept).
MERGE_RADIUS = 0.1 * u.deg
_R68_FACTOR = np.sqrt(-2 * np.log(1 - 0.68))  # 68% radius / sigma of a 2D Gaussian
DEFAULT_THRESHOLD = 0.5  # used only by networks without a calibration in their card

_UNSET = object()  # default of a deprecated parameter: tells "not given" from None


def _stacklevel_outside_package():
    """``stacklevel`` of the first caller outside gammapy_cnn, for a warning raised from here.

    A deprecation is the user's to fix: the warning points at their line, also
    when it passes through the package's own modules.
    """
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("gammapy_cnn"):
        frame, level = frame.f_back, level + 1
    return level


COLUMNS = {
    "Source_Name": ("", "candidate name, gammapy catalogue style (CNN JHHMM.m+DDMM)"),
    "RA": ("deg", "right ascension (ICRS)"),
    "DEC": ("deg", "declination (ICRS)"),
    "GLON": ("deg", "Galactic longitude"),
    "GLAT": ("deg", "Galactic latitude"),
    "ra": ("deg", "same as RA (find_peaks spelling)"),
    "dec": ("deg", "same as DEC (find_peaks spelling)"),
    "x": ("", "sub-pixel x position in the input map (0 = centre of the first pixel)"),
    "y": ("", "sub-pixel y position in the input map"),
    "score": ("", "network detection score (heatmap peak, 0-1)"),
    "false_alarm_rate": ("", "expected false candidates per 5x5 deg field with a score this high "
                         "(for a candidate kept by the rescue rule: an upper bound)"),
    "significance": ("", "sqrt(TS) of the local Poisson fit of a source over the CNN background"),
    "excess": ("", "fitted source counts"),
    "pos_err": ("deg", "1-sigma position error per axis (the fit's Fisher error times the "
                "calibrated pos_err_scale)"),
    "pos_err_68": ("deg", "68% containment radius of the position error"),
}


def _make_table(values=None, meta=None):
    """Candidates table with the documented columns, units and descriptions."""
    columns = []
    for name, (unit, description) in COLUMNS.items():
        dtype = "U20" if name == "Source_Name" else float
        data = np.zeros(0, dtype=dtype) if values is None else np.asarray(values[name], dtype=dtype)
        columns.append(Column(data, name=name, unit=unit or None, description=description))
    return Table(columns, meta=meta, copy=False)


def empty_candidates_table(meta=None):
    """A candidates table with no row: the columns, units and descriptions of `COLUMNS`."""
    return _make_table(meta=meta)


@functools.lru_cache
def _icrs_to_galactic():
    """Rotation matrix from ICRS to Galactic unit vectors (a fixed rotation in astropy)."""
    axes = SkyCoord(x=[1, 0, 0], y=[0, 1, 0], z=[0, 0, 1], representation_type="cartesian",
                    frame="icrs").galactic.cartesian.xyz.value
    return axes  # column j: ICRS axis j in Galactic coordinates


def _icrs_and_galactic(image, x, y):
    """(ra, dec), (glon, glat) in deg of pixel positions of a 2D `~gammapy.maps.WcsGeom`.

    The candidates table needs both frames at every call of the real-time
    path; one matrix product replaces astropy's frame machinery (0.5 ms).
    """
    if image.frame not in ("icrs", "galactic"):
        coord = SkyCoord.from_pixel(x, y, image.wcs, origin=0)
        return ((coord.icrs.ra.deg, coord.icrs.dec.deg),
                (coord.galactic.l.deg, coord.galactic.b.deg))
    lon, lat = np.radians(image.wcs.wcs_pix2world(x, y, 0))
    vector = np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
    matrix = _icrs_to_galactic()
    other = matrix @ vector if image.frame == "icrs" else matrix.T @ vector
    other_lon = np.degrees(np.arctan2(other[1], other[0])) % 360
    other_lat = np.degrees(np.arcsin(np.clip(other[2], -1, 1)))
    this = (np.degrees(lon) % 360, np.degrees(lat))
    return (this, (other_lon, other_lat)) if image.frame == "icrs" else ((other_lon, other_lat), this)


def _source_name(ra, dec):
    """gammapy-style name from RA, Dec in deg: CNN JHHMM.m+DDMM."""
    ra_h = (ra % 360) / 15
    h = int(ra_h)
    m10 = int((ra_h - h) * 600)  # tenths of minutes
    sign = "+" if dec >= 0 else "-"
    d = int(abs(dec))
    dm = int((abs(dec) - d) * 60)
    return f"CNN J{h:02d}{m10 // 10:02d}.{m10 % 10}{sign}{d:02d}{dm:02d}"


#: Energy bins are grouped so that each group holds at least this many fitted
#: source counts; a source with fewer than twice this is fitted energy-integrated.
MIN_GROUP_EXCESS = 6.0
#: Tail index of the King profile fitted to sources (gammapy's PSFKing shape):
#: IACT point-spread functions have broader wings than a Gaussian.
KING_GAMMA = 3.0


def fit_source(counts, background, x0, y0, radius, min_ts=0.0):
    """Poisson maximum-likelihood fit of a point-like source over a fixed background.

    The source profile is a King function, ``(1 + r^2 / (2 gamma sigma^2))^-gamma``
    with ``gamma = KING_GAMMA`` (the shape of gammapy's ``PSFKing``): IACT
    point-spread functions have broader wings than a Gaussian, and a Gaussian
    fitted to them is too wide for the core, where the position is measured.

    Given cubes (one image per energy bin), the source is first fitted to the
    energy-integrated images, which gives its counts and TS; then the energy
    bins are grouped into bands of at least `MIN_GROUP_EXCESS` fitted source
    counts and the source is fitted again with one position and, per band,
    its own width and amplitude, which gives the position. The PSF narrows
    with energy, so the few high-energy counts locate the source best; an
    energy-integrated profile weights them like the broad low-energy ones.

    Parameters
    ----------
    counts, background : `~numpy.ndarray`
        (ny, nx) images or (n_energy, ny, nx) cubes.
    x0, y0 : float
        Start position (pixels).
    radius : float
        Radius of the fitted cutout (pixels).
    min_ts : float
        Skip the energy-resolved fit when the energy-integrated TS is below
        this (a candidate about to be rejected needs no precise position).

    Returns
    -------
    result : dict
        ``x``, ``y`` and ``pos_err`` (1-sigma per axis, pixels, from the
        Fisher information, at most ``radius``) of the energy-resolved fit;
        ``sigma`` (pixels), ``amplitude`` (source counts) and ``ts`` of the
        energy-integrated one; ``n_bands``, the energy bands fitted.
    """
    counts, background = np.asarray(counts), np.asarray(background)
    if counts.ndim == 2:
        counts, background = counts[None], background[None]
    ny, nx = counts.shape[-2:]
    r = int(np.ceil(radius))
    ix, iy = int(np.rint(x0)), int(np.rint(y0))
    ys = slice(max(iy - r, 0), min(iy + r + 1, ny))
    xs = slice(max(ix - r, 0), min(ix + r + 1, nx))
    yy, xx = np.mgrid[ys, xs]
    xx, yy = xx.ravel().astype(float), yy.ravel().astype(float)
    c = counts[:, ys, xs].reshape(len(counts), -1).astype(float)
    b = np.maximum(background[:, ys, xs].reshape(len(counts), -1).astype(float), 1e-6 / len(counts))

    excess = max(np.sum((c - b).sum(axis=0)[(xx - x0) ** 2 + (yy - y0) ** 2 <= 9]), 1.0)
    start = np.array([x0, y0, np.log(2.5), np.log(excess)])
    total = _fit_profile(c.sum(axis=0, keepdims=True), b.sum(axis=0, keepdims=True), xx, yy,
                          start, radius)
    bands = _energy_bands(c, b, xx, yy, total) if total["ts"] >= min_ts else [list(range(len(c)))]
    fit = total
    if len(bands) > 1:
        c_b = np.array([c[band].sum(axis=0) for band in bands])
        b_b = np.array([b[band].sum(axis=0) for band in bands])
        weights = np.maximum(c_b.sum(axis=1) - b_b.sum(axis=1), 1.0)
        x, y, log_s, log_a = total["params"]
        start = np.concatenate([[x, y], np.full(len(bands), log_s),
                                log_a + np.log(weights / weights.sum())])
        fit = _fit_profile(c_b, b_b, xx, yy, start, radius)
    x, y = fit["params"][:2]
    _, _, log_s, log_a = total["params"]
    return dict(x=x, y=y, pos_err=fit["pos_err"], sigma=np.exp(log_s), amplitude=np.exp(log_a),
                ts=total["ts"], n_bands=len(bands))


def _energy_bands(counts, background, xx, yy, total):
    """Consecutive energy bins grouped into bands of at least `MIN_GROUP_EXCESS` source counts."""
    x, y, log_s, _ = total["params"]
    near = (xx - x) ** 2 + (yy - y) ** 2 <= (2 * np.exp(log_s)) ** 2
    excess = (counts[:, near] - background[:, near]).sum(axis=1)
    bands, current, accumulated = [], [], 0.0
    for i, value in enumerate(excess):
        current.append(i)
        accumulated += value
        if accumulated >= MIN_GROUP_EXCESS:
            bands.append(current)
            current, accumulated = [], 0.0
    if current:  # a faint high-energy tail joins the last band
        if bands:
            bands[-1] += current
        else:
            bands.append(current)
    return bands


def _fit_profile(c, b, xx, yy, start, radius, width_range=None):
    """Fisher scoring of King profiles sharing one position, one width and amplitude per band.

    ``c``, ``b``: (n_bands, n_pixels); ``start``: x, y, log widths, log amplitudes;
    ``width_range``: (low, high) of the log widths (pixels; equal bounds fix them).
    Default: 0.6 pixels to half the radius.
    """
    n = len(c)
    x0, y0 = start[:2]
    log_low, log_high = (np.log(0.6), np.log(radius / 2)) if width_range is None else width_range
    low = np.concatenate([[x0 - radius / 2, y0 - radius / 2], np.full(n, log_low),
                          np.full(n, np.log(0.1))])
    high = np.concatenate([[x0 + radius / 2, y0 + radius / 2], np.full(n, log_high),
                           np.full(n, np.log(1e7))])
    eye = np.eye(n)[:, :, None]  # a band's width and amplitude act on its own pixels only

    def model(p):
        x, y = p[:2]
        s2 = np.exp(2 * p[2 : 2 + n])[:, None]
        a = np.exp(p[2 + n :])[:, None]
        u = ((xx - x) ** 2 + (yy - y) ** 2) / (2 * KING_GAMMA * s2)
        ag = a * (1 - 1 / KING_GAMMA) / (2 * np.pi * s2) * (1 + u) ** -KING_GAMMA
        d_pos = ag / (s2 * (1 + u))  # d(model)/dx = d_pos * (xx - x)
        grads = np.concatenate([
            (d_pos * (xx - x))[None], (d_pos * (yy - y))[None],
            eye * (ag * (2 * KING_GAMMA * u / (1 + u) - 2))[None], eye * ag[None],
        ]).reshape(2 + 2 * n, -1)
        return (b + ag).ravel(), grads

    data = c.ravel()
    p = np.clip(start, low, high)
    # Fisher scoring (Gauss-Newton for Poisson data) with step halving: converges in
    # ~10 steps of tens of microseconds, with no optimiser threads or overhead.
    mu, grads = model(p)
    value = np.sum(mu - data * np.log(mu))
    for _ in range(30):
        score = grads @ (data / mu - 1)
        fisher = (grads / mu) @ grads.T + 1e-9 * np.eye(len(p))
        try:
            step = np.linalg.solve(fisher, score)
        except np.linalg.LinAlgError:
            break
        for _ in range(8):
            trial = np.clip(p + step, low, high)
            mu_t, grads_t = model(trial)
            value_t = np.sum(mu_t - data * np.log(mu_t))
            if value_t <= value:
                break
            step = step / 2
        else:
            break
        converged = value - value_t < 1e-4  # of a log-likelihood: far below any error
        p, mu, grads, value = trial, mu_t, grads_t, value_t
        if converged:
            break
    try:
        cov = np.linalg.inv((grads / mu) @ grads.T)
        # a candidate with no fitted excess has an unconstrained position: say
        # "somewhere in the fitted region", not an astronomically large number
        pos_err = float(min(np.sqrt(max((cov[0, 0] + cov[1, 1]) / 2, 0)), radius))
        log_width_err = float(np.sqrt(max(cov[2, 2], 0)))
    except np.linalg.LinAlgError:
        pos_err, log_width_err = float(radius), np.inf
    bkg = b.ravel()
    value0 = np.sum(bkg - data * np.log(bkg))
    return dict(params=p, ts=max(2 * (value0 - value), 0.0), pos_err=pos_err,
                log_width_err=log_width_err)


def _per_energy(data, dataset, grid):
    """(n_energy, ny, nx) images inside the safe mask, on the native grid."""
    data = np.asarray(data, dtype=float)
    data = data.reshape((-1,) + data.shape[-2:])
    if dataset.mask_safe is not None:
        data = data * np.asarray(dataset.mask_safe.data, bool).reshape(data.shape)
    return np.array([grid.to_native(image) for image in data], dtype=np.float32)


def _candidate_discs(shape, xs, ys, radius):
    """(ny, nx) bool: the discs of ``radius`` pixels around the candidates."""
    discs = np.zeros(shape, bool)
    ny, nx = shape
    for x, y in zip(xs, ys):
        ys_ = slice(int(np.clip(y - radius, 0, ny)), int(np.clip(y + radius + 2, 0, ny)))
        xs_ = slice(int(np.clip(x - radius, 0, nx)), int(np.clip(x + radius + 2, 0, nx)))
        yy, xx = np.ogrid[ys_, xs_]
        discs[ys_, xs_] |= (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
    return discs


class CNNSourceFinder(Estimator):
    """Find and localise every source candidate in a map dataset, with a CNN.

    Needs only counts: no background template, no IRFs, no target. The
    default network predicts a heatmap of source probability on 0.1 deg
    cells with a sub-cell offset (CenterNet style), so it returns any number
    of candidates; each is then refined by a Poisson likelihood fit of a
    King profile over the CNN background (`CNNBackgroundMaker`), which gives the
    sub-pixel position, its error, the excess counts and a TS.

    ``score`` is the heatmap peak. Its calibration, stored in the network's
    model card, turns it into ``false_alarm_rate``: the expected number of
    false candidates per 5 x 5 deg field (100 s to 30 min) with that score or
    more, measured on simulations held out from training. The default
    threshold is the one the card recommends.

    The ``original`` network is the original CNN-Regressor: one candidate per
    map, no score calibration, no refinement (``"seed"`` is an alias of it).

    Parameters
    ----------
    network : str or `~pathlib.Path`
        Shipped finder network (``"default"``, ``"original"``) or ``.keras`` file.
    threshold : float, optional
        Minimum score of a candidate. Default: the network's calibrated default.
    background_network : str, `~pathlib.Path` or None
        Background network for the refinement (see `CNNBackgroundMaker`), or
        None to use the dataset's own ``npred_background()``. The same name as
        ``cnn.background_network`` in the analysis config and
        ``--background-network`` on the command line.
    refine : bool
        Refine positions with the local fit. Default True.
    max_candidates : int
        At most this many candidates, best first.
    pos_err_scale : float, optional
        Factor applied to the fit's Fisher position error. Default: the one
        calibrated on held-out simulations in the network's card (1 if none),
        so that ``pos_err_68`` contains the true position 68% of the time.
    rescue : bool
        Also keep peaks below the threshold whose local fit is significant
        (`rescue_rule`, from the card; networks without it have none). Default True.
    background : str, `~pathlib.Path` or None
        Deprecated name of ``background_network`` (a FutureWarning); it goes
        in the next release.

    Examples
    --------
    >>> from gammapy_cnn import CNNSourceFinder
    >>> table = CNNSourceFinder()(dataset)  # doctest: +SKIP
    >>> table["Source_Name", "RA", "DEC", "score", "pos_err_68"]  # doctest: +SKIP
    """

    tag = "CNNSourceFinder"

    def __init__(self, network="default", threshold=None, background_network="default", refine=True,
                 max_candidates=50, pos_err_scale=None, rescue=True, background=_UNSET):
        if background is not _UNSET:
            if background_network != "default":
                raise TypeError("give background_network only (background is its deprecated name)")
            warnings.warn("CNNSourceFinder(background=...) is deprecated: use background_network=...",
                          FutureWarning, stacklevel=_stacklevel_outside_package())
            background_network = background
        self.network_name = network
        if threshold is not None and not 0 <= float(threshold) <= 1:
            raise ValueError(f"threshold is a score between 0 and 1, got {threshold}")
        self._threshold = threshold
        self.background_network = background_network
        self.refine = bool(refine)
        if int(max_candidates) < 1:
            raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
        self.max_candidates = int(max_candidates)
        if pos_err_scale is not None and not float(pos_err_scale) > 0:
            raise ValueError(f"pos_err_scale must be positive, got {pos_err_scale}")
        self._pos_err_scale = pos_err_scale
        self.rescue = bool(rescue)
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):
        """A copy (`copy`) with its own lock; a loaded network (learned, read-only state) is shared."""
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key == "_lock":
                value = threading.Lock()
            elif key != "network":
                value = copy.deepcopy(value, memo)
            new.__dict__[key] = value
        return new

    @lazyproperty
    def network(self):
        """The loaded finder `~gammapy_cnn.networks.Network`."""
        return load_network("finder", self.network_name)

    @lazyproperty
    def background_maker(self):
        if self.background_network is None:
            return None
        if self.network.architecture == ORIGINAL:  # the original regressor reads the original cleaner
            return CNNBackgroundMaker(ORIGINAL)
        return CNNBackgroundMaker(self.background_network)

    @property
    def calibration(self):
        return self.network.card.get("calibration")

    @property
    def threshold(self):
        if self._threshold is not None:
            return float(self._threshold)
        return float((self.calibration or {}).get("default_threshold", DEFAULT_THRESHOLD))

    @property
    def rescue_rule(self):
        """The second detection rule, or None: ``dict(score=..., significance=...)``.

        A peak whose score is below the threshold but at least ``score`` is kept
        when its local fit gives at least ``significance`` (sqrt(TS)): the
        network is unsure, the counts are not. Its false rate is calibrated in
        the card (`~gammapy_cnn.training.calibrate_finder`); it needs the refinement.
        """
        cal = self.calibration or {}
        if not (self.rescue and self.refine and "rescue_score" in cal):
            return None
        return dict(score=float(cal["rescue_score"]), significance=float(cal["rescue_significance"]))

    @property
    def pos_err_scale(self):
        """Factor from the fit's Fisher error to the reported ``pos_err`` (calibrated in the card)."""
        if self._pos_err_scale is not None:
            return float(self._pos_err_scale)
        return float((self.calibration or {}).get("pos_err_scale", 1.0))

    def false_alarm_rate(self, score):
        """Expected false candidates per field at or above ``score`` (NaN if uncalibrated)."""
        cal = self.calibration
        if not cal:
            return np.full(np.shape(score), np.nan)
        return np.interp(score, cal["score"], cal["false_per_field"])

    def __call__(self, dataset):
        return self.run(dataset)

    def run(self, dataset):
        """Candidates of a dataset, best first.

        Parameters
        ----------
        dataset : `~gammapy.datasets.MapDataset`
            Counts-only or full, 2D or 3D, any WCS geometry.

        Returns
        -------
        table : `~astropy.table.Table`
            One row per candidate; see ``COLUMNS`` for the columns and units.
            An empty table (same columns) when nothing passes the threshold.
        """
        with self._lock:  # lazy loading is not thread-safe; inference is (tested with 4 threads)
            network = self.network
            maker = self.background_maker
            if maker is not None:
                maker.network  # noqa: B018  (load it here, not in two threads at once)
        grid, counts, mask, native_counts, native_mask = native_images(dataset)
        geom = dataset.counts.geom
        if not counts.any():  # no event, no candidate (an empty time window is valid input)
            return self._table([], geom, grid)
        if network.architecture == ORIGINAL:
            rows = self._original_candidates(network, native_counts)
        else:
            rows = self._candidates(network, native_counts, native_mask, maker, dataset, grid)
        return self._table(rows, geom, grid)

    def _original_candidates(self, network, counts):
        if counts.shape != (NATIVE_NPIX, NATIVE_NPIX):
            raise ValueError(f"the original regressor only takes {NATIVE_NPIX} x {NATIVE_NPIX} maps "
                             f"of {NATIVE_BINSZ} pixels")
        x, _, _ = original_stretch(counts[None])
        cleaner = self.background_maker.network if self.background_maker else load_network("cleaner", ORIGINAL)
        cleaned = cleaner.predict(x[..., None])
        xy = network.predict(cleaned)[0] * NATIVE_NPIX
        return [dict(x=xy[0], y=xy[1], score=float(cleaned[0].max()), significance=np.nan,
                     excess=np.nan, pos_err=np.nan)]

    def _candidates(self, network, counts, mask, maker, dataset, grid):
        x, _ = normalise(counts[None], mask[None])
        x, window = pad(x)
        out = network.predict(x)
        heat = out["heatmap"][0, ..., 0]
        offset = out["offset"][0]
        rescue = self.rescue_rule
        floor = min(self.threshold, rescue["score"]) if rescue else self.threshold
        peaks = (heat == maximum_filter(heat, size=3)) & (heat >= floor)
        iy, ix = np.nonzero(peaks)
        order = np.argsort(heat[iy, ix])[::-1][: 2 * self.max_candidates]
        iy, ix = iy[order], ix[order]
        binsz = NATIVE_BINSZ.to_value("deg")
        radius = FIT_RADIUS.to_value("deg") / binsz
        xs = FINDER_STRIDE * (ix + offset[iy, ix, 0]) + (FINDER_STRIDE - 1) / 2 - window[1].start
        ys = FINDER_STRIDE * (iy + offset[iy, ix, 1]) + (FINDER_STRIDE - 1) / 2 - window[0].start
        if self.refine and len(xs):
            # per-energy cubes only now: most real-time fields have no candidate,
            # and a large map's cube costs memory
            cube = _per_energy(dataset.counts.data, dataset, grid)
            if maker is not None:
                background = maker.estimate_background(counts[None], mask[None])
                # the spectrum as CNNBackgroundMaker.run makes it, the candidates' discs left out too
                background_cube = split_in_energy(background[0], cube, counts, mask,
                                                  exclude=_candidate_discs(mask.shape, xs, ys, 1.5 * radius))
            else:
                background_cube = _per_energy(dataset.npred_background().data, dataset, grid)
        rows = []
        for cy, cx, px, py in zip(iy, ix, xs, ys):
            ix0, iy0 = int(np.rint(px)), int(np.rint(py))
            if not (0 <= ix0 < counts.shape[1] and 0 <= iy0 < counts.shape[0] and mask[iy0, ix0]):
                continue
            row = dict(x=px, y=py, score=float(heat[cy, cx]), significance=np.nan, excess=np.nan,
                       pos_err=np.nan)
            if self.refine:
                below = row["score"] < self.threshold  # only a rescue can keep it
                fit = fit_source(cube, background_cube, px, py, radius,
                                 min_ts=rescue["significance"] ** 2 if below else 0.0)
                row.update(significance=np.sqrt(fit["ts"]), excess=fit["amplitude"],
                           pos_err=fit["pos_err"] * binsz * self.pos_err_scale)
                on_map = (-0.5 <= fit["x"] <= counts.shape[1] - 0.5
                          and -0.5 <= fit["y"] <= counts.shape[0] - 0.5)
                if on_map and np.hypot(fit["x"] - px, fit["y"] - py) < radius / 2 - 0.5:
                    row.update(x=fit["x"], y=fit["y"])
            rescued = rescue is not None and row["significance"] >= rescue["significance"]
            if row["score"] < self.threshold and not rescued:
                continue
            # At most the centre of a border pixel: the table's positions (x, y and sky
            # coordinates, after resampling) always lie inside the input map.
            row.update(x=float(np.clip(row["x"], 0, counts.shape[1] - 1)),
                       y=float(np.clip(row["y"], 0, counts.shape[0] - 1)))
            rows.append(row)
        kept = []
        merge = MERGE_RADIUS.to_value("deg") / binsz
        for row in rows:  # best first: drop candidates that converged onto a better one
            if all(np.hypot(row["x"] - k["x"], row["y"] - k["y"]) > merge for k in kept):
                kept.append(row)
        return kept[: self.max_candidates]

    def _table(self, rows, geom, grid):
        meta = dict(network=str(self.network_name), threshold=self.threshold)
        if not rows:
            return _make_table(meta=meta)
        image = geom.to_image()
        x_in, y_in = grid.pix_from_native(np.array([r["x"] for r in rows]),
                                          np.array([r["y"] for r in rows]))
        (ra, dec), (glon, glat) = _icrs_and_galactic(image, x_in, y_in)
        scores = np.array([r["score"] for r in rows])
        pos_err = np.array([r["pos_err"] for r in rows])
        values = dict(
            Source_Name=[_source_name(r, d) for r, d in zip(ra, dec)], RA=ra, DEC=dec,
            GLON=glon, GLAT=glat, ra=ra, dec=dec, x=x_in, y=y_in, score=scores,
            false_alarm_rate=self.false_alarm_rate(scores),
            significance=[r["significance"] for r in rows], excess=[r["excess"] for r in rows],
            pos_err=pos_err, pos_err_68=pos_err * _R68_FACTOR,
        )
        return _make_table(values, meta=meta)

    def run_catalog(self, dataset):
        """Candidates as a `CandidateCatalog` (gammapy `SourceCatalog` interface)."""
        return CandidateCatalog(self.run(dataset))


class CandidateObject(SourceCatalogObject):
    """One candidate, with the `SourceCatalogObject` interface.

    ``spatial_model()`` is a point source at the candidate; ``spectral_model()``
    a power law of index 2.5 whose amplitude is a placeholder to be fitted.
    """

    def spatial_model(self):
        ra = u.Quantity(self.data["RA"], "deg")
        dec = u.Quantity(self.data["DEC"], "deg")
        model = PointSpatialModel(lon_0=ra, lat_0=dec, frame="icrs")
        err = u.Quantity(self.data.get("pos_err", np.nan), "deg").value
        if np.isfinite(err):
            model.lon_0.error = err / max(np.cos(dec.to_value("rad")), 1e-3)
            model.lat_0.error = err
        return model

    def spectral_model(self):
        return PowerLawSpectralModel(index=2.5, amplitude="1e-12 cm-2 s-1 TeV-1", reference="1 TeV")

    def sky_model(self, name=None):
        name = name or self.name.replace(" ", "_").replace("+", "p").replace("-", "m").replace(".", "_")
        return SkyModel(spatial_model=self.spatial_model(), spectral_model=self.spectral_model(),
                        name=name)


class CandidateCatalog(SourceCatalog):
    """CNN candidates with gammapy's catalogue interface.

    Index by row number or ``Source_Name``; ``.positions``; ``.to_models()``
    gives point-source `~gammapy.modeling.models.SkyModel` seeds for a fit.
    """

    tag = "cnn-candidates"
    description = "Source candidates found by gammapy-cnn's CNNSourceFinder"
    source_object_class = CandidateObject

    def __init__(self, table):
        super().__init__(table, source_name_key="Source_Name")

    def to_models(self, **kwargs):
        return Models([source.sky_model(**kwargs) for source in self])

    def to_regions(self, **kwargs):
        return candidates_to_regions(self.table, **kwargs)


def candidates_to_regions(table, circle=True):
    """Candidates as `regions` objects: circles of radius ``pos_err_68``, or points.

    Returns
    -------
    regions : `~regions.Regions`
    """
    out = []
    for row in table:
        center = SkyCoord(row["RA"], row["DEC"], unit="deg", frame="icrs")
        radius = row["pos_err_68"]
        meta = {"text": str(row["Source_Name"])}
        if circle and np.isfinite(radius):
            out.append(CircleSkyRegion(center, radius * u.deg, meta=meta))
        else:
            out.append(PointSkyRegion(center, meta=meta))
    return Regions(out)


def write_ds9(table, path, overwrite=True):
    """Write candidates as a DS9 region file (circles of radius ``pos_err_68``)."""
    candidates_to_regions(table).write(str(path), format="ds9", overwrite=overwrite)


ESTIMATOR_REGISTRY.append(CNNSourceFinder)
