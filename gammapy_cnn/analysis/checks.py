"""Cross-checks of a CNN result against gammapy's own methods.

- `BackgroundComparison`: CNN, `~gammapy.makers.FoVBackgroundMaker` and
  `~gammapy.makers.RingBackgroundMaker` backgrounds of one dataset, side by side.
- `aperture_photometry`: counts, background, excess and Li & Ma significance
  in circles at the candidates (`~gammapy.stats.CashCountsStatistic` or
  `~gammapy.stats.WStatCountsStatistic`), next to
  `~gammapy.estimators.ExcessMapEstimator`'s value at the same place.
- `exclusion_mask_from_candidates`: a gammapy exclusion mask with circles at
  the candidates.
"""

import time

import astropy.units as u
import numpy as np
from astropy.table import Table
from gammapy.datasets import Datasets, MapDataset, MapDatasetOnOff
from gammapy.estimators import ExcessMapEstimator
from gammapy.makers import FoVBackgroundMaker, RingBackgroundMaker
from gammapy.maps import Map
from gammapy.stats import CashCountsStatistic, WStatCountsStatistic
from regions import CircleSkyRegion

from ..makers import CNNBackgroundMaker
from ..runs import as_dataset_list
from ..templates import AutoExclusionFoVBackgroundMaker
from ..utils import to_quantity
from .maps import (
    _background_cube,
    _background_only,
    _plane,
    _positions,
    _valid_image,
    energy_integrated_image,
)

__all__ = [
    "BackgroundComparison",
    "aperture_photometry",
    "exclusion_mask_from_candidates",
]


def exclusion_mask_from_candidates(geom, candidates, radius=0.3 * u.deg):
    """gammapy exclusion mask (True = usable for background) with circles at candidates.

    Parameters
    ----------
    geom : `~gammapy.maps.WcsGeom`
        Geometry (the image part is used).
    candidates : `~astropy.table.Table` or `~astropy.coordinates.SkyCoord`
        Table with ``RA``/``DEC`` columns in deg, or positions.
    radius : `~astropy.units.Quantity`
        Radius of the excluded circles.

    Returns
    -------
    mask : `~gammapy.maps.WcsNDMap`
        2D boolean map.
    """
    image = geom.to_image()
    positions = _positions(candidates)
    if len(positions) == 0:
        return Map.from_geom(image, data=np.ones(image.data_shape, bool))
    radius = to_quantity(radius, "deg", "radius", bare_numbers=True)
    regions = [CircleSkyRegion(p, radius) for p in positions]
    return ~image.region_mask(regions)


class BackgroundComparison:
    """Backgrounds of one dataset by the CNN, `FoVBackgroundMaker` and `RingBackgroundMaker`
    (and, on request, `~gammapy_cnn.templates.AutoExclusionFoVBackgroundMaker`).

    All methods see the same counts, safe mask and exclusion mask; the
    comparison is made on energy-integrated images. FoV and ring need the
    dataset's background template (the IRF background); the CNN needs only
    the counts.

    Parameters
    ----------
    network : str or `~pathlib.Path`
        CNN cleaner network (see `~gammapy_cnn.CNNBackgroundMaker`).
    exclusion_mask : `~gammapy.maps.WcsNDMap`, optional
        True where no source is expected (gammapy convention). Default: none
        excluded (use `exclusion_mask_from_candidates` to exclude candidates).
    r_in, width : `~astropy.units.Quantity`
        Ring inner radius and width. Default 0.5 and 0.3 deg.
    correlation_radius : `~astropy.units.Quantity`
        Radius of the `~gammapy.estimators.ExcessMapEstimator` significance maps.
    methods : tuple of str
        Any of ``cnn``, ``fov_background``, ``ring`` (the default three) and
        ``fov_auto`` (the template normalised outside an exclusion mask found
        in the counts, one mask for the runs of `Datasets`; ``exclusion_mask``
        adds to it).

    Examples
    --------
    >>> comparison = BackgroundComparison(exclusion_mask=mask)  # doctest: +SKIP
    >>> comparison.run(dataset)  # doctest: +SKIP
    """

    METHODS = ("cnn", "fov_background", "ring", "fov_auto")

    def __init__(self, network="default", exclusion_mask=None, r_in=0.5 * u.deg, width=0.3 * u.deg,
                 correlation_radius=0.1 * u.deg, methods=METHODS[:3]):
        unknown = [m for m in methods if m not in self.METHODS]
        if unknown or not methods:
            raise ValueError(f"methods must be among {self.METHODS}, got {list(methods)}")
        self.network = network
        self.exclusion_mask = exclusion_mask
        self.r_in = to_quantity(r_in, "deg", "r_in", bare_numbers=True)
        self.width = to_quantity(width, "deg", "width", bare_numbers=True)
        self.correlation_radius = to_quantity(correlation_radius, "deg", "correlation_radius",
                                              bare_numbers=True)
        self.methods = tuple(methods)

    def _exclusion(self, geom):
        image = geom.to_image()
        if self.exclusion_mask is None:
            return Map.from_geom(image, data=np.ones(image.data_shape, bool))
        mask = self.exclusion_mask.interp_to_geom(image, method="nearest")
        return Map.from_geom(image, data=np.asarray(mask.data, bool))

    def estimates(self, dataset):
        """Image datasets with each method's background, and each method's time.

        Parameters
        ----------
        dataset : `~gammapy.datasets.MapDataset` or `~gammapy.datasets.Datasets`
            Counts and, for ``fov_background`` and ``ring``, a background
            template. `Datasets` (one per run, on one geometry) are compared
            on their stack; the CNN estimates each run on its own
            (`CNNBackgroundMaker.run` on `Datasets`) and sums them.

        Returns
        -------
        datasets : dict
            Method -> energy-integrated `~gammapy.datasets.MapDataset` (ring:
            `~gammapy.datasets.MapDatasetOnOff`) without source models.
        times : dict
            Method -> wall-clock seconds of the estimate.
        """
        runs, dataset = _runs_and_stack(dataset)
        needs_template = {"fov_background", "ring", "fov_auto"} & set(self.methods)
        if needs_template and (dataset.background is None or not np.any(dataset.background.data)):
            raise ValueError(
                f"methods {sorted(needs_template)} need the dataset's background template "
                "(map_selection with 'background'); only 'cnn' works from counts alone"
            )
        exclusion = self._exclusion(dataset.counts.geom)
        mask_safe = dataset.mask_safe
        counts = energy_integrated_image(dataset.counts, mask_safe)
        safe = Map.from_geom(counts.geom,
                             data=_valid_image(dataset).reshape(counts.data.shape))
        out, times = {}, {}
        for method in self.methods:
            start = time.perf_counter()
            if method == "cnn":
                result = CNNBackgroundMaker(self.network).run(runs if runs is not None else dataset)
                if runs is not None:
                    result = result.stack_reduce(name=dataset.name)
                background = energy_integrated_image(result.npred_background(), mask_safe)
                out[method] = MapDataset(counts=counts, background=background, mask_safe=safe,
                                         name=method)
            elif method == "fov_auto":
                maker = AutoExclusionFoVBackgroundMaker(exclusion_mask=self.exclusion_mask)
                if runs is not None:
                    result = maker.run(Datasets([_background_only(run) for run in runs]))
                    result = result.stack_reduce(name=dataset.name) if len(result) > 1 else result[0]
                else:
                    result = maker.run(_background_only(dataset))
                background = energy_integrated_image(result.npred_background(), mask_safe)
                out[method] = MapDataset(counts=counts, background=background, mask_safe=safe,
                                         name=method)
            elif method == "fov_background":
                maker = FoVBackgroundMaker(method="scale", exclusion_mask=exclusion)
                result = maker.run(_background_only(dataset))
                background = energy_integrated_image(result.npred_background(), mask_safe)
                out[method] = MapDataset(counts=counts, background=background, mask_safe=safe,
                                         name=method)
            else:
                template = energy_integrated_image(
                    _background_only(dataset).npred_background(), mask_safe)
                image = MapDataset(counts=counts, background=template, mask_safe=safe, name=method)
                out[method] = RingBackgroundMaker(self.r_in, self.width, exclusion).run(image)
            times[method] = time.perf_counter() - start
        return out, times

    def run(self, dataset, true_background=None):
        """Compare the methods.

        Parameters
        ----------
        dataset : `~gammapy.datasets.MapDataset` or `~gammapy.datasets.Datasets`
            As in `estimates`.
        true_background : `~numpy.ndarray` or `~gammapy.maps.Map`, optional
            True expected background counts (cube or image), for simulations.

        Returns
        -------
        table : `~astropy.table.Table`
            One row per method, all on the pixels valid for every method (the
            ring loses the field's edge): ``background`` (total counts),
            ``off_counts`` and ``off_background`` (outside the exclusion mask),
            ``off_ratio`` (their ratio, ideally 1), ``sigma_mean`` and
            ``sigma_std`` (Li & Ma significance outside the exclusion mask and
            ring-free edges, ideally 0 and 1), ``time`` (s); with a truth,
            ``true_ratio`` (total / true total) and ``true_rms`` (rms relative
            deviation from the truth in 0.25 deg blocks).
        """
        estimates, times = self.estimates(dataset)
        dataset = _runs_and_stack(dataset)[1]
        exclusion = self._exclusion(dataset.counts.geom).data
        truth = None
        if true_background is not None:
            truth = np.asarray(getattr(true_background, "data", true_background), dtype=float)
            if truth.ndim == 3:
                safe3 = (np.ones(truth.shape, bool) if dataset.mask_safe is None
                         else np.asarray(dataset.mask_safe.data, bool))
                truth = (truth * safe3).sum(axis=0)
            if truth.shape != exclusion.shape:
                raise ValueError(f"true_background has image shape {truth.shape}, "
                                 f"the dataset {exclusion.shape}")
        shape = exclusion.shape

        def plane(m):
            return np.asarray(m.data).reshape(shape)

        # pixels valid for every method (the ring loses the edges), so rows compare
        valid = np.logical_and.reduce([plane(image.mask_safe).astype(bool)
                                       for image in estimates.values()])
        off = valid & exclusion
        rows = []
        for method, image in estimates.items():
            counts = plane(image.counts)
            background = plane(_background_cube(image))
            estimator = ExcessMapEstimator(correlation_radius=self.correlation_radius)
            sqrt_ts = plane(estimator.run(image)["sqrt_ts"])
            sig = sqrt_ts[off & np.isfinite(sqrt_ts)]
            row = dict(method=method, background=background[valid].sum(),
                       off_counts=counts[off].sum(), off_background=background[off].sum(),
                       sigma_mean=sig.mean() if sig.size else np.nan,
                       sigma_std=sig.std() if sig.size else np.nan, time=times[method])
            row["off_ratio"] = row["off_counts"] / row["off_background"]
            if truth is not None:
                row["true_ratio"] = background[valid].sum() / truth[valid].sum()
                row["true_rms"] = _block_rms(background, truth, valid, image.counts.geom)
            rows.append(row)
        table = Table(rows=rows)
        columns = ["method", "background", "off_counts", "off_background", "off_ratio",
                   "sigma_mean", "sigma_std", "time"]
        if truth is not None:
            columns += ["true_ratio", "true_rms"]
        table = table[columns]
        table["time"].unit = "s"
        return table


def _runs_and_stack(dataset):
    """(runs or None, the dataset to compare on) of a MapDataset or per-run Datasets."""
    runs = None
    if isinstance(dataset, Datasets):
        runs = Datasets(as_dataset_list(dataset))
        dataset = runs.stack_reduce(name="stacked") if len(runs) > 1 else runs[0]
    if not isinstance(dataset, MapDataset) or isinstance(dataset, MapDatasetOnOff):
        raise ValueError("BackgroundComparison needs a MapDataset (counts and a template)")
    return runs, dataset


def _block_rms(background, truth, valid, geom, block=0.25 * u.deg):
    """RMS of (estimate - truth) / truth summed in square blocks fully inside ``valid``."""
    n = max(int(round((block / geom.pixel_scales[0]).to_value(""))), 1)
    ny, nx = (s // n * n for s in background.shape)

    def blocks(a):
        return a[:ny, :nx].reshape(ny // n, n, nx // n, n).sum(axis=(1, 3))

    full = blocks(valid.astype(float)) == n * n
    t = blocks(truth * valid)
    keep = full & (t > 0)
    if not keep.any():
        return np.nan
    rel = (blocks(background * valid) - t)[keep] / t[keep]
    return float(np.sqrt(np.mean(rel**2)))


def aperture_photometry(dataset, candidates, radius=0.1 * u.deg):
    """Counts, background, excess and Li & Ma significance in circles at candidates.

    A `~gammapy.datasets.MapDataset` has a known background (its
    ``npred_background()``, source models ignored): the significance is
    `~gammapy.stats.CashCountsStatistic` (Li & Ma for a known background). A
    `~gammapy.datasets.MapDatasetOnOff` (e.g. from `RingBackgroundMaker`) has an
    OFF measurement: `~gammapy.stats.WStatCountsStatistic` (Li & Ma eq. 17),
    with ``alpha`` the aperture's background over its OFF counts. Energy bins
    outside ``mask_safe`` are left out. ``sqrt_ts_map`` is the same quantity
    from `~gammapy.estimators.ExcessMapEstimator` (top-hat of the same radius,
    at the nearest pixel) as a cross-check.

    Parameters
    ----------
    dataset : `~gammapy.datasets.MapDataset` or `~gammapy.datasets.MapDatasetOnOff`
    candidates : `~astropy.table.Table` or `~astropy.coordinates.SkyCoord`
        Table with ``RA``/``DEC`` (deg; e.g. from `CNNSourceFinder`), or positions.
    radius : `~astropy.units.Quantity`
        Aperture radius. Default 0.1 deg.

    Returns
    -------
    table : `~astropy.table.Table`
        ``Source_Name`` (when given), ``RA``, ``DEC`` (deg), ``counts``,
        ``n_off``, ``alpha``, ``background``, ``excess``, ``sqrt_ts``,
        ``sqrt_ts_map``, ``statistic``.
    """
    if not isinstance(dataset, MapDataset) or dataset.counts is None:
        raise ValueError("aperture_photometry needs a map dataset with counts")
    radius = to_quantity(radius, "deg", "radius", positive=True, bare_numbers=True)
    positions = _positions(candidates)
    geom = dataset.counts.geom
    image = geom.to_image()
    on_off = isinstance(dataset, MapDatasetOnOff)
    if not on_off and dataset.background is None:
        raise ValueError("aperture_photometry needs a dataset background (e.g. CNNBackgroundMaker)")
    safe = (np.ones(geom.data_shape, bool) if dataset.mask_safe is None
            else np.asarray(dataset.mask_safe.data, bool))
    counts = np.asarray(dataset.counts.data, float) * safe
    background = np.asarray(_background_cube(dataset).data, float) * safe
    n_off_cube = np.asarray(dataset.counts_off.data, float) * safe if on_off else None

    estimator = ExcessMapEstimator(correlation_radius=radius)
    reference = dataset if on_off else _background_only(dataset)
    sqrt_ts_map = _plane(estimator.run(reference)["sqrt_ts"])
    map_values = sqrt_ts_map.get_by_coord({"skycoord": positions}) if len(positions) else []

    rows = []
    for i, position in enumerate(positions):
        region = image.region_mask([CircleSkyRegion(position, radius)]).data
        n_on = counts[..., region].sum()
        mu_bkg = background[..., region].sum()
        if on_off:
            n_off = n_off_cube[..., region].sum()
            alpha = mu_bkg / n_off if n_off > 0 else np.nan
            stat = WStatCountsStatistic(n_on=n_on, n_off=n_off, alpha=alpha)
        else:
            n_off, alpha = np.nan, np.nan
            stat = CashCountsStatistic(n_on=n_on, mu_bkg=mu_bkg)
        rows.append(dict(RA=position.ra.deg, DEC=position.dec.deg, counts=n_on, n_off=n_off,
                         alpha=alpha, background=mu_bkg, excess=float(stat.n_sig),
                         sqrt_ts=float(stat.sqrt_ts), sqrt_ts_map=float(map_values[i]),
                         statistic="wstat" if on_off else "cash"))
    names = ["RA", "DEC", "counts", "n_off", "alpha", "background", "excess", "sqrt_ts",
             "sqrt_ts_map", "statistic"]
    table = Table(rows=rows, names=names) if rows else Table(
        names=names, dtype=[float] * 9 + ["U5"])
    if isinstance(candidates, Table) and "Source_Name" in candidates.colnames:
        table.add_column(candidates["Source_Name"], index=0, name="Source_Name")
    table["RA"].unit = table["DEC"].unit = "deg"
    table.meta["radius"] = str(radius)
    return table
