"""Map helpers shared by the analysis and its cross-checks.

`energy_integrated_image` is the one energy-summing helper of the package
(the benchmark uses it too).
"""

import numpy as np
from astropy.coordinates import SkyCoord
from gammapy.datasets import MapDatasetOnOff
from gammapy.maps import Map
from gammapy.modeling.models import FoVBackgroundModel, Models

__all__ = ["energy_integrated_image"]


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


def _background_only(dataset):
    """Copy of a MapDataset whose only models are its background models."""
    out = dataset.copy(name=dataset.name)
    if dataset.models is not None:
        kept = [m for m in dataset.models if isinstance(m, FoVBackgroundModel)]
        out.models = Models(kept) if kept else None
    return out


def _background_cube(dataset):
    """Expected background counts (`Map`): alpha * n_off for on-off datasets."""
    if isinstance(dataset, MapDatasetOnOff):
        return dataset.background  # gammapy: alpha * counts_off, model-independent
    return _background_only(dataset).npred_background()


def _plane(m):
    """The image of a map with one (energy) bin, e.g. an energy-integrated estimator map."""
    data = np.asarray(m.data).reshape((-1,) + m.data.shape[-2:])
    if len(data) != 1:
        raise ValueError(f"expected a single energy bin, got {len(data)}")
    return Map.from_geom(m.geom.to_image(), data=data[0], unit=m.unit)


def _valid_image(dataset):
    """2D boolean array: pixels inside the safe mask in at least one energy bin."""
    if dataset.mask_safe is None:
        return np.ones(dataset.counts.geom.data_shape[-2:], bool)
    mask = np.asarray(dataset.mask_safe.data, bool)
    return mask.reshape((-1,) + mask.shape[-2:]).any(axis=0)


def _positions(candidates):
    """ICRS positions of candidates (a table with ``RA``/``DEC`` in deg, or a SkyCoord)."""
    if isinstance(candidates, SkyCoord):
        return candidates.icrs.reshape(-1)
    return SkyCoord(candidates["RA"], candidates["DEC"], unit="deg", frame="icrs")
