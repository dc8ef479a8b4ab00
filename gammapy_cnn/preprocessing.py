"""From a dataset to network inputs and back; shared by inference and training.

Training and inference call the same functions, so they cannot disagree.
`PREPROCESSING_VERSION` is written in every model card; a network whose card
names another version is refused.

Normalisation (version 1): the energy-integrated counts inside the safe mask
are divided by their mean per valid pixel (the *level*, in counts per
pixel). The network sees three channels: ``counts / level``, the mask, and
``log10(level)`` as a constant context channel, so one network serves maps
from 0.01 to 100 counts per pixel (10 s to several hours). Outputs are
relative to the level and multiplied back: the counts scale is never lost.
"""

import warnings

import astropy.units as u
import numpy as np
from gammapy.datasets import MapDataset
from gammapy.maps import Map, WcsGeom
from scipy.ndimage import gaussian_filter, zoom

from .utils import ENERGY_RANGE, NATIVE_BINSZ

__all__ = [
    "NATIVE_BINSZ",
    "PREPROCESSING_VERSION",
    "counts_image",
    "counts_level",
    "energy_integrated_image",
    "normalise",
    "pad",
    "padded_window",
    "original_stretch",
    "NativeGrid",
    "native_images",
]

PREPROCESSING_VERSION = 1
#: Image sides are padded to a multiple of this (the networks pool 5 times by 2).
PAD_MULTIPLE = 32
#: Pixels per cell of the finder heatmap and of the background estimate.
FINDER_STRIDE = 4
BACKGROUND_STRIDE = 8
MAX_BINSZ = 0.2 * u.deg
MIN_NATIVE_PIXELS = 32
#: Largest map accepted (pixels of the input image); larger maps must be cut first.
MAX_PIXELS = 4096**2
#: Energy range of the training simulations (scenario geometry).
TRAINING_ENERGY_RANGE = u.Quantity(ENERGY_RANGE)
#: Smoothing (pixels) of the input of the original CNN-Cleaner.
ORIGINAL_SMOOTHING_PIXELS = 5


def counts_image(dataset):
    """Energy-integrated counts and 2D validity mask of a dataset.

    Parameters
    ----------
    dataset : `~gammapy.datasets.MapDataset`
        Needs ``counts`` on a WCS geometry; ``mask_safe`` is used when present.

    Returns
    -------
    counts : `~numpy.ndarray`
        (ny, nx) counts summed over the energy bins inside the safe mask.
    mask : `~numpy.ndarray`
        (ny, nx) bool, pixels with at least one valid energy bin.
    """
    if not isinstance(dataset, MapDataset):
        raise TypeError(f"expected a gammapy MapDataset, got {type(dataset).__name__}")
    if dataset.counts is None:
        raise ValueError(f"dataset {dataset.name!r} has no counts: the CNN needs observed counts")
    geom = dataset.counts.geom
    if not isinstance(geom, WcsGeom):
        raise ValueError(
            f"dataset {dataset.name!r} has a {type(geom).__name__}; the CNN needs a WCS map geometry"
        )
    if geom.is_allsky or geom.data_shape[-1] * geom.data_shape[-2] > MAX_PIXELS:
        raise ValueError(
            f"dataset {dataset.name!r}: map of {tuple(int(n) for n in geom.data_shape[-2:])} pixels "
            f"is too large (all-sky or more than {MAX_PIXELS} pixels); cut it into smaller maps"
        )
    unit = dataset.counts.unit
    if unit not in (u.dimensionless_unscaled, u.ct):
        raise ValueError(f"dataset {dataset.name!r}: counts must be dimensionless numbers of events, "
                         f"got unit {unit!r}")
    if "energy" in geom.axes.names:
        _check_energy(geom.axes["energy"].edges, dataset.name)
    data = np.asarray(dataset.counts.data)
    # checked in the map's own float type (gammapy's float32): half the work of float64
    checked = data if data.dtype.kind == "f" else np.asarray(data, dtype=float)
    if not np.all(np.isfinite(checked)):
        raise ValueError(f"dataset {dataset.name!r}: counts hold NaN or infinite values")
    if np.any(checked < 0):
        raise ValueError(f"dataset {dataset.name!r}: counts hold negative values")
    if np.any(checked != np.round(checked)):
        raise ValueError(f"dataset {dataset.name!r}: counts are not whole numbers")
    data = np.asarray(data, dtype=float)
    if data.ndim == 2:
        data = data[None]
    data = data.reshape((-1,) + data.shape[-2:])
    if dataset.mask_safe is not None:
        mask = np.asarray(dataset.mask_safe.data, dtype=bool).reshape(data.shape)
    else:
        mask = np.ones(data.shape, dtype=bool)
    mask_2d = mask.any(axis=0)
    if not mask_2d.any():
        raise ValueError(
            f"dataset {dataset.name!r}: the safe mask is False everywhere. MapDataset.create makes "
            "an all-False mask_safe until a maker fills it; for a counts-only dataset set "
            "dataset.mask_safe = Map.from_geom(dataset.counts.geom, data=True, dtype=bool) "
            "(or dataset.mask_safe = None: every pixel valid)"
        )
    return (data.sum(axis=0) if mask.all() else (data * mask).sum(axis=0)), mask_2d


def energy_integrated_image(cube, mask_safe=None):
    """Sum a cube over energy (every non-spatial axis) inside the safe mask.

    Parameters
    ----------
    cube : `~gammapy.maps.Map`
        Map with an energy axis (or none).
    mask_safe : `~gammapy.maps.Map`, optional
        Bins outside it (False) are left out of the sum.

    Returns
    -------
    image : `~gammapy.maps.Map`
        Dimensionless map that keeps a single energy bin (gammapy's
        estimators need an energy axis); ``image.data[0]`` is the 2D array.
    """
    data = np.asarray(cube.data, dtype=float)
    if mask_safe is not None:
        data = data * np.asarray(mask_safe.data, dtype=bool)
    data = data.reshape((-1,) + data.shape[-2:]).sum(axis=0)
    geom = cube.geom.squash("energy") if "energy" in cube.geom.axes.names else cube.geom
    return Map.from_geom(geom, data=data.reshape(geom.data_shape), unit="")


def _check_energy(edges, name):
    if not edges.unit.is_equivalent(u.TeV):
        raise ValueError(f"dataset {name!r}: its energy axis is in {edges.unit!r}, not an energy unit")
    low, high = TRAINING_ENERGY_RANGE
    if edges.max() <= low or edges.min() >= high:
        # Not an error: the spatial shapes may still be right, but nothing was learned there.
        warnings.warn(
            f"dataset {name!r}: its energy range {edges.min().to('TeV'):.3g} - "
            f"{edges.max().to('TeV'):.3g} does not overlap the {low:.3g} - {high:.3g} the networks "
            "were trained on; the estimate is an extrapolation",
            UserWarning, stacklevel=4,
        )


def normalise(counts, mask):
    """Network input from a counts image.

    Parameters
    ----------
    counts : `~numpy.ndarray`
        (..., ny, nx) energy-integrated counts.
    mask : `~numpy.ndarray`
        (..., ny, nx) bool validity mask.

    Returns
    -------
    x : `~numpy.ndarray`
        (..., ny, nx, 3) float32 network input.
    level : `~numpy.ndarray`
        (...) mean counts per valid pixel (a half count is added so an
        empty map has a finite, small level).
    """
    counts = np.asarray(counts, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    level = counts_level(counts, mask)
    lv = level[..., None, None]
    x = np.empty(counts.shape + (3,), np.float32)
    x[..., 0] = counts * mask / lv
    x[..., 1] = mask
    x[..., 2] = np.log10(lv) * mask
    return x, level


def counts_level(counts, mask):
    """The ``level`` of `normalise`: mean counts per valid pixel, a half count added."""
    return ((counts * mask).sum(axis=(-2, -1)) + 0.5) / np.maximum(mask.sum(axis=(-2, -1)), 1)


def pad(array, multiple=PAD_MULTIPLE):
    """Zero-pad the two image axes (-3, -2 of an (..., ny, nx, c) array) up to a multiple.

    Returns the padded array and where the image lies in it (`padded_window`).
    """
    ny, nx = array.shape[-3:-1]
    py, px = -ny % multiple, -nx % multiple
    widths = [(0, 0)] * (array.ndim - 3) + [(py // 2, py - py // 2), (px // 2, px - px // 2), (0, 0)]
    return np.pad(array, widths), padded_window((ny, nx), multiple)


def padded_window(shape, multiple=PAD_MULTIPLE):
    """The (y, x) slices of an image of ``shape`` (ny, nx) in its `pad`-ded array."""
    ny, nx = shape
    py, px = -ny % multiple, -nx % multiple
    return slice(py // 2, py // 2 + ny), slice(px // 2, px // 2 + nx)


def original_stretch(counts):
    """Input of the original CNN-Cleaner: Gaussian smoothing (5 px) and a [0, 1] stretch.

    Returns
    -------
    stretched : `~numpy.ndarray`
        (..., ny, nx) in [0, 1].
    low, high : `~numpy.ndarray`
        The stretch of each map, to undo it.
    """
    counts = np.asarray(counts, dtype=np.float64)
    sigma = (0,) * (counts.ndim - 2) + (ORIGINAL_SMOOTHING_PIXELS, ORIGINAL_SMOOTHING_PIXELS)
    smooth = gaussian_filter(counts, sigma=sigma, mode="constant")
    low = smooth.min(axis=(-2, -1), keepdims=True)
    high = smooth.max(axis=(-2, -1), keepdims=True)
    return ((smooth - low) / np.where(high > low, high - low, 1)).astype(np.float32), low, high


#: Former name of `original_stretch` (the ``original`` architecture was called ``seed``).
seed_stretch = original_stretch


class NativeGrid:
    """Resampling between a dataset's WCS pixels and the networks' native pixels.

    Parameters
    ----------
    geom : `~gammapy.maps.WcsGeom`
        Geometry of the input dataset.
    native_binsz : `~astropy.units.Quantity`
        Pixel size the network was trained on.
    """

    def __init__(self, geom, native_binsz=NATIVE_BINSZ):
        binsz = np.abs(geom.pixel_scales.to_value("deg"))
        if not np.allclose(binsz[0], binsz[1], rtol=1e-3):
            raise ValueError(f"pixels must be square, got {binsz} deg")
        self.binsz = binsz[0] * u.deg
        if self.binsz > MAX_BINSZ:
            raise ValueError(
                f"pixels of {self.binsz:.3f} are larger than {MAX_BINSZ}: the PSF is not resolved"
            )
        self.factor = float((self.binsz / u.Quantity(native_binsz)).to_value(""))
        self.shape = tuple(int(n) for n in geom.data_shape[-2:])  # plain ints in messages
        native = np.rint(np.array(self.shape) * self.factor).astype(int)
        if native.min() < MIN_NATIVE_PIXELS:
            raise ValueError(
                f"map of {self.shape} pixels of {self.binsz:.3f} is too small: it must span at "
                f"least {MIN_NATIVE_PIXELS * u.Quantity(native_binsz):.2f} on each side"
            )
        self.native_shape = tuple(native)
        self.identity = abs(self.factor - 1) < 1e-3

    def to_native(self, image, conserve=True):
        """Image (ny, nx) on the native grid; ``conserve`` keeps the total sum."""
        if self.identity:
            return image
        zoomed = zoom(np.asarray(image, float), np.array(self.native_shape) / self.shape, order=1)
        return zoomed / self.factor**2 if conserve else zoomed

    def from_native(self, image, conserve=True):
        """Native-grid image back on the dataset's pixels."""
        if self.identity:
            return image
        zoomed = zoom(np.asarray(image, float), np.array(self.shape) / self.native_shape, order=1)
        return zoomed * self.factor**2 if conserve else zoomed

    def pix_from_native(self, x, y):
        """Pixel coordinates on the dataset's grid of native-grid ones (as `zoom` maps them)."""
        if self.identity:
            return x, y
        (ny, nx), (my, mx) = self.shape, self.native_shape
        return x * (nx - 1) / (mx - 1), y * (ny - 1) / (my - 1)


def native_images(dataset):
    """A dataset's energy-integrated counts and mask, on its own and on the native grid.

    Returns
    -------
    grid : `NativeGrid`
    counts, mask : `~numpy.ndarray`
        (ny, nx) on the dataset's pixels (see `counts_image`).
    native_counts, native_mask : `~numpy.ndarray`
        The same on the networks' native pixels (counts conserved).
    """
    counts, mask = counts_image(dataset)
    grid = NativeGrid(dataset.counts.geom)
    native_counts = grid.to_native(counts)
    native_mask = grid.to_native(mask.astype(float), conserve=False) > 0.5
    return grid, counts, mask, native_counts, native_mask
