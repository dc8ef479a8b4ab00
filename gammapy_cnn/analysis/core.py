"""High-level, config-driven CNN analysis on top of gammapy's `~gammapy.analysis.Analysis`.

gammapy's `~gammapy.analysis.AnalysisConfig` forbids unknown keys and knows
three background methods (``reflected``, ``fov_background``, ``ring``). This
module extends it by subclassing only (nothing in gammapy is patched):

- `CNNAnalysisConfig` reads every gammapy analysis YAML, plus ``background:
  method: cnn`` and a ``cnn:`` section (`CNNConfig`).
- `CNNAnalysis` is gammapy's `~gammapy.analysis.Analysis` with the CNN
  background maker and a new step, `CNNAnalysis.find_sources`, that runs
  `~gammapy_cnn.CNNSourceFinder` on the (stacked) dataset.
- `CNNAnalysis.write` writes the datasets, candidates (ECSV, DS9 regions,
  seed models) and a summary figure, atomically (``gammapy-cnn analysis``).

and gives the cross-checks a careful user wants on a CNN result:

- `BackgroundComparison`: CNN, `~gammapy.makers.FoVBackgroundMaker` and
  `~gammapy.makers.RingBackgroundMaker` backgrounds of one dataset, side by side.
- `aperture_photometry`: counts, background, excess and Li & Ma significance
  in circles at the candidates (`~gammapy.stats.CashCountsStatistic` or
  `~gammapy.stats.WStatCountsStatistic`), next to
  `~gammapy.estimators.ExcessMapEstimator`'s value at the same place.
- `fit_candidates`: a 3D likelihood `~gammapy.modeling.Fit` of point sources
  seeded at the candidates (needs a dataset with IRFs).

Examples
--------
>>> from gammapy_cnn.analysis import CNNAnalysis, CNNAnalysisConfig
>>> config = CNNAnalysisConfig.read("examples/configs/crab_hess_cnn.yaml")  # doctest: +SKIP
>>> analysis = CNNAnalysis(config)  # doctest: +SKIP
>>> analysis.run()  # observations, datasets, find-sources  # doctest: +SKIP
>>> analysis.candidates["Source_Name", "RA", "DEC", "score", "significance"]  # doctest: +SKIP
>>> analysis.write("crab-output")  # doctest: +SKIP

From the shell: ``gammapy-cnn analysis examples/configs/crab_hess_cnn.yaml --output crab-output``.
"""

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Optional

import astropy.units as u
import numpy as np
import yaml
from astropy.coordinates import SkyCoord
from astropy.table import Table
from gammapy.analysis import Analysis, AnalysisConfig
from gammapy.analysis.config import (
    BackgroundConfig,
    BackgroundMethodEnum,
    DatasetsConfig,
    GammapyBaseConfig,
    deep_update,
)
from gammapy.datasets import Datasets, MapDataset, MapDatasetOnOff
from gammapy.estimators import ExcessMapEstimator
from gammapy.makers import FoVBackgroundMaker, RingBackgroundMaker
from gammapy.maps import Map
from gammapy.modeling import Fit
from gammapy.modeling.models import FoVBackgroundModel, Models
from gammapy.stats import CashCountsStatistic, WStatCountsStatistic
from gammapy.utils.scripts import read_yaml
from pydantic import Field, field_validator, model_validator
from regions import CircleSkyRegion

from .finders import _R68_FACTOR, CandidateCatalog, CNNSourceFinder, write_ds9
from .makers import CNNBackgroundMaker

__all__ = [
    "BackgroundComparison",
    "CNNAnalysis",
    "CNNAnalysisConfig",
    "CNNBackgroundConfig",
    "CNNConfig",
    "CNNDatasetsConfig",
    "CandidateFitResult",
    "aperture_photometry",
    "exclusion_mask_from_candidates",
    "fit_candidates",
]

log = logging.getLogger(__name__)

#: gammapy's background methods plus ``cnn``; built from gammapy's enum so a
#: method gammapy adds later is accepted here too.
CNNBackgroundMethodEnum = Enum(
    "CNNBackgroundMethodEnum",
    {**{member.name: member.value for member in BackgroundMethodEnum}, "cnn": "cnn"},
    type=str,
)


class CNNBackgroundConfig(BackgroundConfig):
    """gammapy's ``datasets.background`` section, whose ``method`` also accepts ``cnn``.

    With ``method: cnn``, ``parameters`` go to `~gammapy_cnn.CNNBackgroundMaker`
    (e.g. ``batch_size``); the network is ``cnn.background_network``. An
    ``exclusion`` mask is not needed (and not used) by the CNN.
    """

    method: Optional[CNNBackgroundMethodEnum] = None


class CNNDatasetsConfig(DatasetsConfig):
    """gammapy's ``datasets`` section with `CNNBackgroundConfig`."""

    background: CNNBackgroundConfig = CNNBackgroundConfig()


class CNNConfig(GammapyBaseConfig):
    """The ``cnn:`` section of a `CNNAnalysisConfig`.

    Attributes
    ----------
    background_network : str
        Shipped cleaner network name (``default``, ``seed``) or ``.keras`` file
        (``~`` and ``$VARS`` are expanded). Used by ``background: method: cnn``
        and by the source finder's local fit.
    finder_network : str
        Shipped finder network name or ``.keras`` file.
    threshold : float, optional
        Minimum candidate score (0-1). Default: the finder network's calibrated default.
    find_sources : bool
        Run the ``find-sources`` step in `CNNAnalysis.run`. Default True.
    refine : bool
        Refine candidate positions with the finder's local likelihood fit. Default True.
    rescue : bool
        Also keep below-threshold peaks whose local fit is significant (the
        finder's calibrated second rule, `CNNSourceFinder.rescue_rule`). Default True.
    max_candidates : int
        At most this many candidates, best first. Default 50.
    """

    background_network: str = Field("default", min_length=1)
    finder_network: str = Field("default", min_length=1)
    threshold: Optional[float] = Field(None, ge=0.0, le=1.0)
    find_sources: bool = True
    refine: bool = True
    rescue: bool = True
    max_candidates: int = Field(50, ge=1)

    @field_validator("background_network", "finder_network", mode="before")
    @classmethod
    def _path_to_str(cls, value):
        return str(value) if isinstance(value, os.PathLike) else value


class CNNAnalysisConfig(AnalysisConfig):
    """gammapy's `~gammapy.analysis.AnalysisConfig` plus ``background: method: cnn`` and ``cnn:``.

    Every gammapy analysis YAML is valid here. Unknown keys and wrong values
    are refused with pydantic's messages, which name the field (e.g.
    ``cnn.treshold: Extra inputs are not permitted``).

    Examples
    --------
    >>> from gammapy_cnn.analysis import CNNAnalysisConfig
    >>> config = CNNAnalysisConfig.from_yaml('''
    ... datasets:
    ...   type: 3d
    ...   background: {method: cnn}
    ... cnn: {threshold: 0.6}
    ... ''')
    >>> config.datasets.background.method, config.cnn.threshold
    ('cnn', 0.6)
    """

    datasets: CNNDatasetsConfig = CNNDatasetsConfig()
    cnn: CNNConfig = CNNConfig()

    @model_validator(mode="after")
    def _cnn_needs_maps(self):
        if self.datasets.background.method == "cnn" and self.datasets.type == "1d":
            raise ValueError(
                "datasets.background.method 'cnn' needs datasets.type '3d': the CNN estimates "
                "background maps, not spectra (use 'reflected' for a 1D analysis)"
            )
        return self

    @classmethod
    def read(cls, path):
        """Read from a YAML file (``$VARS`` in the path are expanded)."""
        config = read_yaml(path)
        if not isinstance(config, dict):
            raise ValueError(f"{path} does not hold a YAML mapping of analysis settings")
        config.pop("metadata", None)
        return cls(**config)

    @classmethod
    def from_yaml(cls, config_str):
        """Create from a YAML string."""
        settings = yaml.safe_load(config_str)
        if settings is None:
            settings = {}
        if not isinstance(settings, dict):
            raise ValueError("the YAML text does not hold a mapping of analysis settings")
        # to_yaml() writes a metadata block that gammapy's own from_yaml refuses
        settings.pop("metadata", None)
        return cls(**settings)

    @classmethod
    def from_analysis_config(cls, config):
        """Convert a plain gammapy `~gammapy.analysis.AnalysisConfig`."""
        return cls.from_yaml(config.to_yaml())

    def update(self, config=None):
        """Return a new config updated with ``config`` (YAML string or config object)."""
        if isinstance(config, str):
            other = self.__class__.from_yaml(config)
        elif isinstance(config, AnalysisConfig):
            other = config
        else:
            raise TypeError(f"Invalid type: {config}")
        merged = deep_update(self.model_dump(exclude_defaults=True),
                             other.model_dump(exclude_defaults=True))
        return self.__class__(**merged)


def _expand(name):
    return os.path.expandvars(os.path.expanduser(str(name)))


#: Steps of `CNNAnalysis.run`, in the order they make sense, and their methods.
STEPS = {
    "observations": "get_observations",
    "datasets": "get_datasets",
    "find-sources": "find_sources",
    "excess-map": "get_excess_map",
    "fit-candidates": "fit_candidates",
    "fit": "run_fit",
    "flux-points": "get_flux_points",
    "light-curve": "get_light_curve",
}


class CNNAnalysis(Analysis):
    """gammapy's config-driven `~gammapy.analysis.Analysis` with CNN background and source finding.

    ``datasets.background.method: cnn`` puts `~gammapy_cnn.CNNBackgroundMaker`
    in gammapy's reduction chain (after the safe mask), so each observation's
    background is estimated from its own counts on its own field of view,
    centred on its pointing as in training, and the stacked background is
    their sum. Only 3D map datasets are supported with ``cnn``.

    Parameters
    ----------
    config : `CNNAnalysisConfig`, `~gammapy.analysis.AnalysisConfig` or dict

    Attributes
    ----------
    candidates : `~astropy.table.Table` or None
        Output of `find_sources` (columns: `gammapy_cnn.finders.COLUMNS`).
    candidate_models : `~gammapy.modeling.models.Models` or None
        Point-source seeds at the candidates (`CandidateCatalog.to_models`).
    candidate_fit : `CandidateFitResult` or None
        Output of `fit_candidates`.

    Examples
    --------
    >>> analysis = CNNAnalysis(CNNAnalysisConfig.read("crab.yaml"))  # doctest: +SKIP
    >>> analysis.run(["observations", "datasets", "find-sources"])  # doctest: +SKIP
    >>> analysis.candidates  # doctest: +SKIP
    """

    def __init__(self, config):
        super().__init__(config)
        self.candidates = None
        self.candidate_models = None
        self.candidate_fit = None
        self.excess_map = None

    @property
    def config(self):
        """Analysis configuration, a `CNNAnalysisConfig`."""
        return self._config

    @config.setter
    def config(self, value):
        if isinstance(value, dict):
            self._config = CNNAnalysisConfig(**value)
        elif isinstance(value, CNNAnalysisConfig):
            self._config = value
        elif isinstance(value, AnalysisConfig):
            self._config = CNNAnalysisConfig.from_analysis_config(value)
        else:
            raise TypeError("config must be dict, CNNAnalysisConfig or AnalysisConfig.")

    @property
    def default_steps(self):
        """``observations``, ``datasets`` and, if ``cnn.find_sources``, ``find-sources``."""
        steps = ["observations", "datasets"]
        if self.config.cnn.find_sources:
            steps.append("find-sources")
        return steps

    def run(self, steps=None):
        """Run analysis steps in order.

        Parameters
        ----------
        steps : list of str, optional
            Any of ``observations``, ``datasets``, ``find-sources``,
            ``excess-map``, ``fit-candidates`` (`fit_candidates`), ``fit``
            (gammapy's ``run_fit`` of the models set on the datasets),
            ``flux-points``, ``light-curve`` (``_`` may replace ``-``).
            Default: `default_steps`.

        Returns
        -------
        analysis : `CNNAnalysis`
            ``self``, for chaining.
        """
        steps = self.default_steps if steps is None else list(steps)
        names = [str(step).replace("_", "-") for step in steps]
        unknown = [step for step, name in zip(steps, names) if name not in STEPS]
        if unknown:
            raise ValueError(f"unknown analysis step(s) {unknown}; valid steps: {list(STEPS)}")
        for name in names:
            start = time.perf_counter()
            getattr(self, STEPS[name])()
            log.info(f"step {name} done in {time.perf_counter() - start:.2f} s")
        return self

    def get_datasets(self):
        """Produce reduced datasets; with ``background.method: cnn``, CNN backgrounds."""
        settings = self.config.datasets
        if settings.background.method == "cnn" and settings.type == "1d":
            raise ValueError(
                "datasets.background.method 'cnn' needs datasets.type '3d': the CNN estimates "
                "background maps, not 1D spectra (use 'reflected' for a spectrum analysis)"
            )
        super().get_datasets()

    def _create_background_maker(self):
        settings = self.config.datasets.background
        if settings.method != "cnn":
            return super()._create_background_maker()
        if settings.exclusion:
            log.warning("datasets.background.exclusion is not used by the CNN background maker")
        try:
            maker = CNNBackgroundMaker(network=_expand(self.config.cnn.background_network),
                                       **settings.parameters)
        except TypeError as error:
            raise ValueError(f"datasets.background.parameters for method 'cnn': {error}") from None
        log.info(f"Creating CNNBackgroundMaker with network {maker.network_name}")
        return maker

    def stacked_dataset(self):
        """The datasets stacked into one (the dataset itself when there is one)."""
        if not self.datasets:
            raise RuntimeError("No datasets: run the 'datasets' step (get_datasets) first.")
        if len(self.datasets) == 1:
            return self.datasets[0]
        return Datasets(self.datasets).stack_reduce(name="stacked")

    def find_sources(self):
        """Run `~gammapy_cnn.CNNSourceFinder` on the (stacked) map dataset.

        Sets ``candidates`` (`~astropy.table.Table`) and ``candidate_models``
        (`~gammapy.modeling.models.Models`, point sources seeded at the candidates).
        The finder estimates its own CNN background from the counts (network
        ``cnn.background_network``), as in its calibration, whatever the
        dataset's background method.
        """
        dataset = self.stacked_dataset()
        if not isinstance(dataset, MapDataset):
            raise ValueError(
                f"find-sources needs a 3D map dataset (datasets.type: 3d), got a {dataset.tag}"
            )
        cnn = self.config.cnn
        finder = CNNSourceFinder(
            network=_expand(cnn.finder_network), threshold=cnn.threshold,
            background=_expand(cnn.background_network), refine=cnn.refine, rescue=cnn.rescue,
            max_candidates=cnn.max_candidates,
        )
        self.candidates = finder.run(dataset)
        self.candidate_models = CandidateCatalog(self.candidates).to_models()
        log.info(f"{len(self.candidates)} CNN candidate(s) above score {finder.threshold:.3f}")

    def fit_candidates(self, max_sources=5):
        """Likelihood fit of point sources seeded at the candidates (see `fit_candidates`).

        Needs datasets with IRFs (``map_selection`` with exposure, psf, edisp)
        and a background; sets ``candidate_fit``.
        """
        if self.candidates is None:
            raise RuntimeError("No candidates: run the 'find-sources' step first.")
        self.candidate_fit = fit_candidates(self.stacked_dataset(), self.candidates,
                                            max_sources=max_sources)
        return self.candidate_fit

    def _summary_dataset(self):
        """Stacked dataset with a background: the CNN's when the dataset has none."""
        dataset = self.stacked_dataset()
        if not isinstance(dataset, MapDataset):
            raise ValueError(f"the summary needs a 3D map dataset, got a {dataset.tag}")
        method = self.config.datasets.background.method
        if isinstance(dataset, MapDatasetOnOff):
            return dataset, method
        if dataset.background is None or not np.any(dataset.background.data):
            maker = CNNBackgroundMaker(_expand(self.config.cnn.background_network))
            return maker.run(dataset), "cnn"
        return _background_only(dataset), method or "IRF template"

    def significance_map(self, dataset=None):
        """Li & Ma significance image of the stacked dataset (`~gammapy.maps.Map`).

        `~gammapy.estimators.ExcessMapEstimator` with the ``excess_map``
        settings of the config (``correlation_radius``, ``parameters``), over
        the dataset's background (or a CNN background when the dataset has
        none), integrated over the energy range.

        Parameters
        ----------
        dataset : `~gammapy.datasets.MapDataset`, optional
            Default: the stacked dataset of the analysis.
        """
        if dataset is None:
            dataset, _ = self._summary_dataset()
        settings = self.config.excess_map
        estimator = ExcessMapEstimator(correlation_radius=settings.correlation_radius,
                                       **settings.parameters)
        return _plane(estimator.run(dataset)["sqrt_ts"])

    def plot_summary(self, figsize=(16, 5.2)):
        """Counts, background and significance of the stacked dataset, candidates marked.

        Returns
        -------
        figure : `matplotlib.figure.Figure`
            Made without pyplot (no display needed).
        """
        from matplotlib.colors import PowerNorm, TwoSlopeNorm
        from matplotlib.figure import Figure

        dataset, method = self._summary_dataset()
        counts = _image(dataset.counts, dataset.mask_safe)
        background = _image(_background_cube(dataset), dataset.mask_safe)
        significance = self.significance_map(dataset)
        top = np.nanmax(significance.data) if np.isfinite(significance.data).any() else 5
        wcs = counts.geom.wcs
        figure = Figure(figsize=figsize, layout="constrained")
        panels = [
            (counts.smooth("0.05 deg", kernel="gauss"), "counts (0.05 deg Gaussian smoothing)",
             dict(cmap="viridis", norm=PowerNorm(0.5))),
            (background, f"background ({method}), counts per pixel", dict(cmap="viridis")),
            # -5..0 keeps the noise visible next to a bright source
            (significance, f"significance, r = {self.config.excess_map.correlation_radius}",
             dict(cmap="RdBu_r", norm=TwoSlopeNorm(0, vmin=-5, vmax=max(5, top)))),
        ]
        for i, (image, title, kwargs) in enumerate(panels):
            ax = figure.add_subplot(1, 3, i + 1, projection=wcs)
            # imshow, not Map.plot: its colour bar goes through pyplot's current figure
            data = np.asarray(image.data, float)
            shown = ax.imshow(data.reshape(data.shape[-2:]), origin="lower", **kwargs)
            figure.colorbar(shown, ax=ax, shrink=0.8)
            ax.coords[0].set_axislabel("RA")
            ax.coords[1].set_axislabel("Dec")
            ax.set_title(title, fontsize=10)
            if self.candidates is not None and len(self.candidates) and i != 1:
                transform = ax.get_transform("icrs")
                ax.scatter(self.candidates["RA"], self.candidates["DEC"], transform=transform,
                           s=120, facecolor="none", edgecolor="k" if i == 2 else "w", lw=1.2)
                for k, row in enumerate(self.candidates):
                    ax.text(row["RA"], row["DEC"], f"  {k}", transform=transform, fontsize=8,
                            color="k" if i == 2 else "w")
        n = 0 if self.candidates is None else len(self.candidates)
        figure.suptitle(f"{dataset.name}: {n} CNN candidate(s)", fontsize=11)
        return figure

    def write(self, outdir, overwrite=False, figure=True):
        """Write the analysis products into ``outdir``, atomically.

        Files: ``analysis.yaml`` (the config), ``datasets.yaml`` and one FITS file
        per dataset (`~gammapy.datasets.Datasets.write`), ``candidates.ecsv``,
        ``candidates.reg`` (DS9), ``candidate_models.yaml``, ``summary.png``.
        Everything is first written to a temporary folder beside ``outdir``; a
        failure leaves ``outdir`` untouched.

        Parameters
        ----------
        outdir : str or `~pathlib.Path`
        overwrite : bool
            Replace existing products. Default False (refuse).
        figure : bool
            Write ``summary.png``.

        Returns
        -------
        paths : dict
            Product name -> `~pathlib.Path`.
        """
        if not self.datasets:
            raise RuntimeError("No datasets to write: run the analysis first.")
        outdir = Path(_expand(outdir))
        names = {"config": "analysis.yaml", "datasets": "datasets.yaml"}
        names.update({f"dataset_{d.name}": f"{d.name}.fits" for d in self.datasets})
        if self.candidates is not None:
            names.update(candidates="candidates.ecsv", regions="candidates.reg",
                         models="candidate_models.yaml")
        if figure:
            names["summary"] = "summary.png"
        existing = [name for name in names.values() if (outdir / name).exists()]
        if existing and not overwrite:
            raise FileExistsError(f"{outdir} already holds {existing}; use overwrite=True")

        outdir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.partial-", dir=outdir.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; it may become outdir
        try:
            (tmp / names["config"]).write_text(self.config.to_yaml())
            self.datasets.write(tmp / names["datasets"], overwrite=True)
            if self.candidates is not None:
                self.candidates.write(tmp / names["candidates"], format="ascii.ecsv")
                write_ds9(self.candidates, tmp / names["regions"])
                self.candidate_models.write(tmp / names["models"], overwrite=True,
                                            write_covariance=False)
            if figure:
                self.plot_summary().savefig(tmp / names["summary"], dpi=110)
            written = sorted(p.name for p in tmp.iterdir())
            if not outdir.exists():
                os.replace(tmp, outdir)
            else:
                for name in written:
                    os.replace(tmp / name, outdir / name)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return {key: outdir / name for key, name in names.items() if name in written}


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


def _image(cube, mask_safe=None):
    """Sum a cube over energy inside the safe mask.

    The result keeps a single energy bin (gammapy's estimators need an energy axis).
    """
    data = np.asarray(cube.data, dtype=float)
    if mask_safe is not None:
        data = data * np.asarray(mask_safe.data, dtype=bool)
    data = data.reshape((-1,) + data.shape[-2:]).sum(axis=0)
    geom = cube.geom.squash("energy") if "energy" in cube.geom.axes.names else cube.geom
    return Map.from_geom(geom, data=data.reshape(geom.data_shape), unit="")


def _plane(m):
    """The image of a map with one (energy) bin, e.g. an energy-integrated estimator map."""
    data = np.asarray(m.data).reshape((-1,) + m.data.shape[-2:])
    if len(data) != 1:
        raise ValueError(f"expected a single energy bin, got {len(data)}")
    return Map.from_geom(m.geom.to_image(), data=data[0], unit=m.unit)


def _valid_image(dataset):
    if dataset.mask_safe is None:
        return np.ones(dataset.counts.geom.data_shape[-2:], bool)
    mask = np.asarray(dataset.mask_safe.data, bool)
    return mask.reshape((-1,) + mask.shape[-2:]).any(axis=0)


def _positions(candidates):
    if isinstance(candidates, SkyCoord):
        return candidates.icrs.reshape(-1)
    return SkyCoord(candidates["RA"], candidates["DEC"], unit="deg", frame="icrs")


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
    regions = [CircleSkyRegion(p, u.Quantity(radius, "deg")) for p in positions]
    return ~image.region_mask(regions)


class BackgroundComparison:
    """Backgrounds of one dataset by the CNN, `FoVBackgroundMaker` and `RingBackgroundMaker`.

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
        Any of ``cnn``, ``fov_background``, ``ring``.

    Examples
    --------
    >>> comparison = BackgroundComparison(exclusion_mask=mask)  # doctest: +SKIP
    >>> comparison.run(dataset)  # doctest: +SKIP
    """

    METHODS = ("cnn", "fov_background", "ring")

    def __init__(self, network="default", exclusion_mask=None, r_in=0.5 * u.deg, width=0.3 * u.deg,
                 correlation_radius=0.1 * u.deg, methods=METHODS):
        unknown = [m for m in methods if m not in self.METHODS]
        if unknown or not methods:
            raise ValueError(f"methods must be among {self.METHODS}, got {list(methods)}")
        self.network = network
        self.exclusion_mask = exclusion_mask
        self.r_in = u.Quantity(r_in, "deg")
        self.width = u.Quantity(width, "deg")
        self.correlation_radius = u.Quantity(correlation_radius, "deg")
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
        dataset : `~gammapy.datasets.MapDataset`
            Counts and, for ``fov_background`` and ``ring``, a background template.

        Returns
        -------
        datasets : dict
            Method -> energy-integrated `~gammapy.datasets.MapDataset` (ring:
            `~gammapy.datasets.MapDatasetOnOff`) without source models.
        times : dict
            Method -> wall-clock seconds of the estimate.
        """
        if not isinstance(dataset, MapDataset) or isinstance(dataset, MapDatasetOnOff):
            raise ValueError("BackgroundComparison needs a MapDataset (counts and a template)")
        needs_template = {"fov_background", "ring"} & set(self.methods)
        if needs_template and (dataset.background is None or not np.any(dataset.background.data)):
            raise ValueError(
                f"methods {sorted(needs_template)} need the dataset's background template "
                "(map_selection with 'background'); only 'cnn' works from counts alone"
            )
        exclusion = self._exclusion(dataset.counts.geom)
        mask_safe = dataset.mask_safe
        counts = _image(dataset.counts, mask_safe)
        safe = Map.from_geom(counts.geom, data=_valid_image(dataset).reshape(counts.data.shape))
        out, times = {}, {}
        for method in self.methods:
            start = time.perf_counter()
            if method == "cnn":
                result = CNNBackgroundMaker(self.network).run(dataset)
                background = _image(result.npred_background(), mask_safe)
                out[method] = MapDataset(counts=counts, background=background, mask_safe=safe,
                                         name=method)
            elif method == "fov_background":
                maker = FoVBackgroundMaker(method="scale", exclusion_mask=exclusion)
                result = maker.run(_background_only(dataset))
                background = _image(result.npred_background(), mask_safe)
                out[method] = MapDataset(counts=counts, background=background, mask_safe=safe,
                                         name=method)
            else:
                template = _image(_background_only(dataset).npred_background(), mask_safe)
                image = MapDataset(counts=counts, background=template, mask_safe=safe, name=method)
                out[method] = RingBackgroundMaker(self.r_in, self.width, exclusion).run(image)
            times[method] = time.perf_counter() - start
        return out, times

    def run(self, dataset, true_background=None):
        """Compare the methods.

        Parameters
        ----------
        dataset : `~gammapy.datasets.MapDataset`
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
    radius = u.Quantity(radius, "deg")
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
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
    models = CandidateCatalog(table).to_models()
    rng = u.Quantity(position_range, "deg").to_value("deg")
    ds = dataset.copy(name=dataset.name)
    ds.models = None
    for model, row in zip(models, table):
        lon, lat = model.spatial_model.lon_0, model.spatial_model.lat_0
        cos = max(np.cos(np.deg2rad(row["DEC"])), 1e-3)
        lon.min, lon.max = lon.value - rng / cos, lon.value + rng / cos
        lat.min, lat.max = lat.value - rng, lat.value + rng
    background = FoVBackgroundModel(dataset_name=ds.name)
    ds.models = Models([*models, background])
    excess = table["excess"] if "excess" in table.colnames else np.full(len(table), np.nan)
    for model, guess in zip(models, excess):
        npred = ds.npred_signal(model_names=[model.name]).data.sum()
        if np.isfinite(guess) and guess > 0 and npred > 0:
            model.spectral_model.amplitude.value *= guess / npred
    fit = fit or Fit()
    result = fit.run([ds])
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
    norm = background.spectral_model.norm
    out.meta.update(success=bool(result.success), background_norm=float(norm.value),
                    background_norm_err=float(norm.error))
    return CandidateFitResult(table=out, models=ds.models, result=result)
