"""Per-run geometry: each run's map centred on its own pointing, and back.

The camera acceptance is smooth and nearly radially symmetric about the
*pointing*, while a source is fixed on the sky. The networks learnt the
acceptance on maps centred on the pointing, and that is where they tell a
source from the background: in a wobble data set each run sees the target
0.5-0.7 deg off-centre, where it breaks the radial symmetry. A stack of runs
centred on the target puts an extended source at the centre, where it looks
like acceptance. So, as gammapy's `~gammapy.analysis.Analysis` does, stacks
are estimated run by run: the background of a stack is the sum of per-run
estimates, each made on a map centred on that run's own pointing.

This module moves maps between a dataset's geometry and its run's frame
(`run_geom`: native 0.025 deg pixels, centred on the pointing) with
count-preserving resampling (`reproject_counts`), finds a dataset's pointing
(`dataset_pointing`) and tells a stack of wobbled runs (`wobble_spread`).
"""

import logging

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from gammapy.datasets import Datasets, MapDataset
from gammapy.maps import WcsGeom

from .utils import NATIVE_BINSZ, NATIVE_NPIX

__all__ = [
    "RUN_FRAME_TOLERANCE",
    "WOBBLE_WARNING_SPREAD",
    "as_dataset_list",
    "common_geom",
    "dataset_pointing",
    "mean_direction",
    "meta_pointings",
    "reproject_counts",
    "run_geom",
    "wobble_spread",
]

log = logging.getLogger(__name__)

#: A single dataset whose runs' pointings spread more than this is a stack of
#: wobbled runs, and its background is best estimated run by run.
WOBBLE_WARNING_SPREAD = 0.2 * u.deg
#: A one-run map whose centre is farther than this from its pointing is
#: estimated in its run frame.
RUN_FRAME_TOLERANCE = 0.05 * u.deg
#: Sub-pixels per pixel side in `reproject_counts` (at least; more for larger input pixels).
_SUBPIXELS = 3


def as_dataset_list(datasets):
    """A non-empty list of `~gammapy.datasets.MapDataset` from ``Datasets`` or a list.

    Raises
    ------
    TypeError
        If an element is not a ``MapDataset`` (the message names it).
    ValueError
        If there is none.
    """
    datasets = list(datasets) if isinstance(datasets, (Datasets, list, tuple)) else [datasets]
    if not datasets:
        raise ValueError("Datasets is empty: give one MapDataset per run.")
    for index, dataset in enumerate(datasets):
        if not isinstance(dataset, MapDataset):
            name = getattr(dataset, "name", index)
            raise TypeError(f"dataset {name!r} is a {type(dataset).__name__}; the per-run path "
                            "takes MapDatasets (one per run)")
    return datasets


def meta_pointings(dataset):
    """ICRS pointings recorded in ``meta_table`` (one per stacked run), or None."""
    table = getattr(dataset, "meta_table", None)  # None too for a non-dataset: its type is checked later
    if table is None or "RA_PNT" not in table.colnames or "DEC_PNT" not in table.colnames:
        return None
    ra = np.ravel(np.asarray(table["RA_PNT"], dtype=float))
    dec = np.ravel(np.asarray(table["DEC_PNT"], dtype=float))
    good = np.isfinite(ra) & np.isfinite(dec)
    if not good.any():
        return None
    return SkyCoord(ra[good], dec[good], unit="deg", frame="icrs")


def dataset_pointing(dataset):
    """The pointing of a one-run dataset, as an ICRS `~astropy.coordinates.SkyCoord`.

    Read from ``dataset.meta_table`` (``RA_PNT``/``DEC_PNT``, as gammapy's
    `~gammapy.makers.MapDatasetMaker` and `gammapy_cnn.data.counts_dataset`
    write them) or from ``dataset.meta.pointing``. For a dataset of several
    runs, the mean of their pointings.

    Raises
    ------
    ValueError
        If the dataset records no pointing; the message says what to provide.
    """
    pointings = meta_pointings(dataset)
    if pointings is None:
        meta = getattr(dataset, "meta", None)
        pointing = getattr(meta, "pointing", None) if meta is not None else None
        radec = getattr(pointing, "radec_mean", None)
        if radec is not None:
            return SkyCoord(radec).icrs
        raise ValueError(
            f"dataset {dataset.name!r} records no pointing: the per-run path centres each "
            "run's map on its pointing. Give it a meta_table with RA_PNT and DEC_PNT (deg), as "
            "gammapy's MapDatasetMaker and gammapy_cnn.data.counts_dataset do, or set "
            "dataset.meta.pointing."
        )
    return mean_direction(pointings)


def mean_direction(coords):
    """Direction of the mean unit vector of ICRS ``coords`` (a scalar `SkyCoord`)."""
    coords = np.atleast_1d(coords)
    x, y, z = coords.icrs.cartesian.xyz.value.reshape(3, -1).mean(axis=1)
    return SkyCoord(np.degrees(np.arctan2(y, x)) % 360, np.degrees(np.arctan2(z, np.hypot(x, y))),
                    unit="deg", frame="icrs")


def wobble_spread(dataset):
    """Largest separation of the runs' pointings from their mean (0 for one run)."""
    pointings = meta_pointings(dataset)
    if pointings is None or len(pointings) < 2:
        return 0 * u.deg
    return pointings.separation(dataset_pointing(dataset)).max().to("deg")


def run_geom(pointing, geom, npix=NATIVE_NPIX):
    """The run frame: a map of native pixels centred on ``pointing``, in ``geom``'s frame.

    Parameters
    ----------
    pointing : `~astropy.coordinates.SkyCoord`
        The run's pointing.
    geom : `~gammapy.maps.WcsGeom`
        The dataset's geometry (its frame and non-spatial axes are kept).
    npix : int
        Width in pixels (default 200: 5 deg, the training maps).
    """
    center = pointing.transform_to(geom.frame)
    return WcsGeom.create(skydir=center, npix=npix, binsz=NATIVE_BINSZ.to_value("deg"),
                          frame=geom.frame, proj="TAN", axes=geom.axes)


def reproject_counts(data, geom_from, geom_to):
    """Resample images from one geometry to another, conserving counts.

    Each input pixel is split into 3 x 3 sub-pixels whose centres are moved
    through the sky into the output geometry; counts landing outside it are
    lost (the returned coverage says where the output has input). Exact for
    counts, fast enough for real time (~10 ms for a 200 x 200 image), unlike
    a precise `~gammapy.maps.Map.reproject_to_geom`.

    Parameters
    ----------
    data : `~numpy.ndarray`
        (..., ny, nx) values on ``geom_from``'s spatial grid.
    geom_from, geom_to : `~gammapy.maps.WcsGeom`

    Returns
    -------
    out : `~numpy.ndarray`
        (..., ny', nx') on ``geom_to``'s spatial grid.
    coverage : `~numpy.ndarray`
        (ny', nx') fraction of each output pixel covered by the input map.
    """
    image_from, image_to = geom_from.to_image(), geom_to.to_image()
    index, inside, n_sub = _subpixel_index(image_from, image_to)
    data = np.asarray(data, dtype=float)
    lead = data.shape[:-2]
    flat = data.reshape((-1,) + data.shape[-2:])
    size = int(np.prod(image_to.data_shape))
    out = np.empty((len(flat), size))
    for k, plane in enumerate(flat):
        weights = np.repeat(plane.ravel(), n_sub**2)[inside] / n_sub**2
        out[k] = np.bincount(index, weights=weights, minlength=size)
    coverage = np.bincount(index, minlength=size) / n_sub**2
    # input pixels are not the output's size: compare with what a full pixel receives
    scale = (image_from.pixel_scales.mean().to_value("deg") / image_to.pixel_scales.mean().to_value("deg")) ** 2
    coverage = np.clip(coverage * scale, 0, 1)
    return out.reshape(lead + image_to.data_shape), coverage.reshape(image_to.data_shape)


def reproject_mask(mask, geom_from, geom_to):
    """Boolean images on another geometry: True where True input covers over half an output pixel.

    Uses `reproject_counts`, whose sums are turned into covered fractions by
    the ratio of the pixels' areas (any pixel sizes).
    """
    values, _ = reproject_counts(np.asarray(mask, float), geom_from, geom_to)
    ratio = (geom_from.to_image().pixel_scales.mean() / geom_to.to_image().pixel_scales.mean()).to_value("") ** 2
    return values * ratio > 0.5


def _geom_key(image):
    return image.frame, image.data_shape, image.wcs.to_header_string()


def _subpixel_index(image_from, image_to):
    """Output pixel of every input sub-pixel (cached: runs repeat their geometries)."""
    key = (_geom_key(image_from), _geom_key(image_to))
    if key not in _INDEX_CACHE:
        if len(_INDEX_CACHE) >= 16:
            _INDEX_CACHE.pop(next(iter(_INDEX_CACHE)))
        _INDEX_CACHE[key] = _compute_subpixel_index(image_from, image_to)
    return _INDEX_CACHE[key]


_INDEX_CACHE = {}


def _compute_subpixel_index(image_from, image_to):
    # sub-pixels at most a third of an output pixel wide: coarser ones fall unevenly
    # (a 0.05 deg map split in 3 x 3 gives 0.025 deg pixels 2 or 3 of them, a striped image)
    ratio = float(np.abs(image_from.pixel_scales.mean() / image_to.pixel_scales.mean()))
    n_sub = max(_SUBPIXELS, int(np.ceil(_SUBPIXELS * ratio)))
    ny, nx = image_from.data_shape
    sub = (np.arange(n_sub) + 0.5) / n_sub - 0.5
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    sub_y, sub_x = np.meshgrid(sub, sub, indexing="ij")
    xs = (xx[..., None, None] + sub_x).ravel()
    ys = (yy[..., None, None] + sub_y).ravel()
    sky = image_from.pix_to_coord((xs, ys))
    if image_from.frame != image_to.frame:
        coord = SkyCoord(sky[0], sky[1], frame=image_from.frame).transform_to(image_to.frame)
        sky = (coord.spherical.lon, coord.spherical.lat)
    px, py = image_to.coord_to_pix(sky)
    ix, iy = np.rint(px), np.rint(py)
    my, mx = image_to.data_shape
    inside = np.isfinite(ix) & np.isfinite(iy) & (ix >= 0) & (iy >= 0) & (ix < mx) & (iy < my)
    return (iy[inside] * mx + ix[inside]).astype(np.int64), inside, n_sub


def common_geom(datasets, binsz=NATIVE_BINSZ):
    """The geometry of a joint result, with pixels of ``binsz``.

    The datasets' own when they share one with such pixels; otherwise a map
    in the first dataset's frame, centred on the mean of the maps' centres,
    wide enough to hold every run's map.

    Raises
    ------
    ValueError
        If a dataset is not on a WCS geometry (the message names it).
    """
    geoms = [d.counts.geom for d in datasets]
    for dataset, geom in zip(datasets, geoms):
        if not isinstance(geom, WcsGeom):
            raise ValueError(f"dataset {dataset.name!r} has a {type(geom).__name__}; "
                             "the per-run path takes WCS maps")
    image = geoms[0].to_image()
    step = u.Quantity(binsz, "deg").to_value("deg")
    native = np.allclose(np.abs(image.pixel_scales.to_value("deg")), step, rtol=1e-3)
    if native and all(g.to_image() == image for g in geoms[1:]):
        return image
    center = mean_direction(SkyCoord([g.center_skydir.icrs for g in geoms]))
    reach = max(
        (center.separation(g.center_skydir.icrs) + np.max(g.width) / np.sqrt(2)).to_value("deg")
        for g in geoms
    )
    npix = int(np.ceil(2 * reach / step))
    return WcsGeom.create(skydir=center.transform_to(image.frame), npix=npix, binsz=step,
                          frame=image.frame, proj="TAN")
