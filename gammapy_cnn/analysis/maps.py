"""Map helpers shared by the analysis and its cross-checks.

`energy_integrated_image`, the one energy-summing helper of the package, lives in
`gammapy_cnn.preprocessing` (the template path uses it too) and is importable from here.
"""

import numpy as np
from astropy.coordinates import SkyCoord
from gammapy.datasets import MapDatasetOnOff
from gammapy.maps import Map
from gammapy.modeling.models import FoVBackgroundModel, Models

from ..preprocessing import energy_integrated_image

__all__ = ["energy_integrated_image"]


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
