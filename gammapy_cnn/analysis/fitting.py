"""Likelihood fits of point sources seeded at CNN candidates.

`fit_candidates` is the analysis-level fit (a `CNNSourceFinder` table in, a
`CandidateFitResult` out). It is built from two reusable pieces, which any
other point-source fit of the package should use too:

- `point_source_models`: point-source power-law `~gammapy.modeling.models.SkyModel`
  seeds at given positions, their positions bounded (`bound_positions`);
- `fit_point_sources`: a `~gammapy.modeling.Fit` of such models with a free
  `~gammapy.modeling.models.FoVBackgroundModel` norm on a copy of a dataset.
"""

from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table
from gammapy.datasets import MapDataset, MapDatasetOnOff
from gammapy.modeling import Fit
from gammapy.modeling.models import FoVBackgroundModel, Models

from ..finders import _R68_FACTOR, CandidateCatalog
from ..utils import to_quantity
from .maps import _positions

__all__ = [
    "CandidateFitResult",
    "bound_positions",
    "fit_candidates",
    "fit_point_sources",
    "point_source_models",
]


def bound_positions(models, position_range=0.3 * u.deg, min_cos_lat=1e-3):
    """Bound each point source's ``lon_0``/``lat_0`` to ``position_range`` around its value.

    The longitude range is widened by 1 / cos(lat) (at least ``min_cos_lat``),
    so the bound is about the same angle on the sky in both directions.

    Parameters
    ----------
    models : iterable of `~gammapy.modeling.models.SkyModel`
        Models with a `~gammapy.modeling.models.PointSpatialModel`; changed in place.
    position_range : `~astropy.units.Quantity`
        Largest move of each position from its current value.
    min_cos_lat : float
        Floor of cos(lat) near the poles.

    Returns
    -------
    models : iterable of `~gammapy.modeling.models.SkyModel`
        The same models.
    """
    rng = to_quantity(position_range, "deg", "position_range", bare_numbers=True).value
    for model in models:
        lon, lat = model.spatial_model.lon_0, model.spatial_model.lat_0
        cos = max(np.cos(np.deg2rad(lat.value)), min_cos_lat)
        lon.min, lon.max = lon.value - rng / cos, lon.value + rng / cos
        lat.min, lat.max = lat.value - rng, lat.value + rng
    return models


def point_source_models(positions, names=None, position_range=0.3 * u.deg):
    """Point-source seeds at ``positions``, their positions bounded for a fit.

    Each is `CandidateCatalog.to_models`' seed: an ICRS
    `~gammapy.modeling.models.PointSpatialModel` and a power law of index 2.5
    and amplitude 1e-12 cm-2 s-1 TeV-1 at 1 TeV (a placeholder to be fitted).

    Parameters
    ----------
    positions : `~astropy.coordinates.SkyCoord` or `~astropy.table.Table`
        Positions, or a table with ``RA``/``DEC`` (deg) and optionally
        ``Source_Name`` and ``pos_err`` (deg; the initial position errors).
    names : list of str, optional
        Model names. Default: the table's ``Source_Name``, else ``candidate``
        (one position) or ``candidate_0``, ``candidate_1``, ...
    position_range : `~astropy.units.Quantity`
        Largest move of each position from its seed (`bound_positions`).

    Returns
    -------
    models : `~gammapy.modeling.models.Models`
    """
    if isinstance(positions, Table):
        table = positions.copy(copy_data=False)
    else:
        coords = _positions(positions)
        table = Table(dict(RA=coords.ra.deg, DEC=coords.dec.deg))
    if names is not None:
        table["Source_Name"] = [str(name) for name in names]
    elif "Source_Name" not in table.colnames:
        table["Source_Name"] = (["candidate"] if len(table) == 1
                                else [f"candidate_{i}" for i in range(len(table))])
    models = CandidateCatalog(table).to_models()
    bound_positions(models, position_range)
    return models


def fit_point_sources(dataset, models, fit=None, npred_guess=None, covariance=True):
    """Fit point-source models with a free FoV background norm on a copy of ``dataset``.

    The dataset's own models are dropped; the fitted ones are ``models`` and a
    `~gammapy.modeling.models.FoVBackgroundModel` (the dataset's background,
    e.g. the CNN's, is its template). A fit mask (``mask_fit``) is kept.

    Parameters
    ----------
    dataset : `~gammapy.datasets.MapDataset`
        With counts, exposure, PSF and background.
    models : list of `~gammapy.modeling.models.SkyModel`
        E.g. `point_source_models`; fitted in place.
    fit : `~gammapy.modeling.Fit`, optional
        Default ``Fit()``.
    npred_guess : array-like, optional
        Expected source counts of each model (e.g. a candidate's ``excess``);
        where finite and positive, the model's amplitude is scaled to it
        before the fit.
    covariance : bool
        `~gammapy.modeling.Fit.run` (optimize and errors) if True, else only
        `~gammapy.modeling.Fit.optimize` (faster, no errors).

    Returns
    -------
    dataset : `~gammapy.datasets.MapDataset`
        The fitted copy; ``dataset.models`` are ``models`` and the background
        model (``dataset.background_model``).
    result : `~gammapy.modeling.FitResult` or `~gammapy.modeling.OptimizeResult`
    """
    models = list(models)
    ds = dataset.copy(name=dataset.name)
    ds.models = None
    ds.models = Models([*models, FoVBackgroundModel(dataset_name=ds.name)])
    if npred_guess is not None:
        for model, guess in zip(models, npred_guess):
            npred = ds.npred_signal(model_names=[model.name]).data.sum()
            if np.isfinite(guess) and guess > 0 and npred > 0:
                model.spectral_model.amplitude.value *= guess / npred
    fit = fit or Fit()
    result = fit.run([ds]) if covariance else fit.optimize([ds])
    return ds, result


@dataclass
class CandidateFitResult:
    """Output of `fit_candidates`.

    Attributes
    ----------
    table : `~astropy.table.Table`
        One row per fitted candidate: ``Source_Name``, ``RA``, ``DEC`` (fitted, deg),
        ``RA_seed``, ``DEC_seed``, ``shift`` (fitted - seed, deg), ``pos_err``
        (1-sigma per axis, deg), ``pos_err_68`` (deg), ``amplitude`` and
        ``amplitude_err`` (cm-2 s-1 TeV-1 at 1 TeV), ``index``, ``index_err``,
        ``npred`` (fitted source counts); ``meta``: ``success``,
        ``background_norm`` and ``background_norm_err`` (the fitted
        `FoVBackgroundModel` norm on the dataset's background).
    models : `~gammapy.modeling.models.Models`
        Fitted models (sources and background).
    result : `~gammapy.modeling.FitResult`
    """

    table: Table
    models: Models
    result: object


def fit_candidates(dataset, candidates, max_sources=5, position_range=0.3 * u.deg, fit=None):
    """3D likelihood fit of point sources seeded at CNN candidates.

    The seeds are `CandidateCatalog.to_models` (point source, power law); their
    amplitudes start from the candidates' ``excess`` when known. Positions may
    move by ``position_range`` at most; a `FoVBackgroundModel` norm is fitted
    with them (the dataset's background, e.g. the CNN's, is its template).
    See `point_source_models` and `fit_point_sources` for the two steps.

    Parameters
    ----------
    dataset : `~gammapy.datasets.MapDataset`
        With exposure, PSF and background (e.g. a reduced dataset, or
        `SimulationTemplate.reference_dataset` with counts).
    candidates : `~astropy.table.Table`
        `CNNSourceFinder` output (best first).
    max_sources : int
        Fit at most this many candidates (the best ones).
    position_range : `~astropy.units.Quantity`
        Bound on each position's move from its seed.
    fit : `~gammapy.modeling.Fit`, optional

    Returns
    -------
    result : `CandidateFitResult`
    """
    if not isinstance(dataset, MapDataset) or isinstance(dataset, MapDatasetOnOff):
        raise ValueError("fit_candidates needs a MapDataset")
    missing = [name for name in ("exposure", "psf", "background") if getattr(dataset, name) is None]
    if dataset.exposure is not None and not np.any(dataset.exposure.data):
        missing.append("exposure (all zero)")
    if missing:
        raise ValueError(f"fit_candidates needs a dataset with IRFs; missing {missing} "
                         "(reduce with map_selection counts, exposure, background, psf, edisp)")
    if int(max_sources) < 1:
        raise ValueError(f"max_sources must be >= 1, got {max_sources}")
    table = candidates[: int(max_sources)]
    if len(table) == 0:
        raise ValueError("no candidates to fit")
    models = point_source_models(table, position_range=position_range)
    excess = table["excess"] if "excess" in table.colnames else np.full(len(table), np.nan)
    ds, result = fit_point_sources(dataset, models, fit=fit, npred_guess=excess)
    rows = []
    for model, row in zip(models, table):
        spatial, spectral = model.spatial_model, model.spectral_model
        dec = spatial.lat_0.value
        err_lat = spatial.lat_0.error
        err_lon = spatial.lon_0.error * np.cos(np.deg2rad(dec))
        pos_err = float(np.sqrt((err_lat**2 + err_lon**2) / 2))
        fitted = SkyCoord(spatial.lon_0.value, dec, unit="deg", frame="icrs")
        seed = SkyCoord(row["RA"], row["DEC"], unit="deg", frame="icrs")
        rows.append(dict(
            Source_Name=str(row["Source_Name"]), RA=fitted.ra.deg, DEC=fitted.dec.deg,
            RA_seed=seed.ra.deg, DEC_seed=seed.dec.deg, shift=fitted.separation(seed).deg,
            pos_err=pos_err, pos_err_68=pos_err * _R68_FACTOR,
            amplitude=spectral.amplitude.value, amplitude_err=spectral.amplitude.error,
            index=spectral.index.value, index_err=spectral.index.error,
            npred=float(ds.npred_signal(model_names=[model.name]).data.sum()),
        ))
    out = Table(rows=rows)
    for name in ("RA", "DEC", "RA_seed", "DEC_seed", "shift", "pos_err", "pos_err_68"):
        out[name].unit = "deg"
    out["amplitude"].unit = out["amplitude_err"].unit = "cm-2 s-1 TeV-1"
    norm = ds.background_model.spectral_model.norm
    out.meta.update(success=bool(result.success), background_norm=float(norm.value),
                    background_norm_err=float(norm.error))
    return CandidateFitResult(table=out, models=ds.models, result=result)
