"""`CNNAnalysis`: gammapy's config-driven `~gammapy.analysis.Analysis` with CNN steps.

`CNNAnalysis` is gammapy's `~gammapy.analysis.Analysis` with the CNN
background maker and a new step, `CNNAnalysis.find_sources`, that runs
`~gammapy_cnn.CNNSourceFinder` on the (stacked) dataset; `CNNAnalysis.write`
writes the datasets, candidates (ECSV, DS9 regions, seed models) and a summary
figure, atomically, into the folder it is given (``gammapy-cnn analysis``
writes into ``--output``, by default the config's ``general.outdir``, which
gammapy sets to ``.``, the current folder).
"""

import logging
import os
import time
from pathlib import Path

import numpy as np
from gammapy.analysis import Analysis, AnalysisConfig
from gammapy.datasets import Datasets, MapDataset, MapDatasetOnOff
from gammapy.estimators import ExcessMapEstimator
from gammapy.maps import Map
from gammapy.utils.scripts import make_path

from ..background import away_from_excesses, systematic_fraction
from ..finders import CandidateCatalog, CNNSourceFinder, write_ds9
from ..makers import CNNBackgroundMaker
from ..templates import AutoExclusionFoVBackgroundMaker
from ..utils import atomic_directory
from .config import CNNAnalysisConfig
from .fitting import fit_candidates
from .maps import _background_cube, _background_only, _plane, energy_integrated_image

__all__ = ["CNNAnalysis"]

log = logging.getLogger(__name__)


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
    their sum. In a 1D analysis (``datasets.type: 1d`` with an ``on_region``)
    each run's background is the CNN estimate of its whole field of view
    summed over the ON region (`~gammapy_cnn.CNNBackgroundMaker.run` on a
    `~gammapy.datasets.SpectrumDataset`): a `~gammapy.datasets.SpectrumDataset`
    for Cash fits, flux points and light curves, beside ``reflected``. The per-run
    datasets are kept in ``run_datasets`` (also when ``datasets.stack`` is
    true), and ``find-sources`` searches them jointly
    (`~gammapy_cnn.CNNSourceFinder.run` on `~gammapy.datasets.Datasets`):
    a map stacked on the target would hide extended sources in the
    acceptance.

    Parameters
    ----------
    config : `CNNAnalysisConfig`, `~gammapy.analysis.AnalysisConfig` or dict

    Attributes
    ----------
    run_datasets : `~gammapy.datasets.Datasets` or None
        The per-run datasets of the ``datasets`` step (3D).
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
        self.run_datasets = None
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
        """``observations``, ``datasets`` and, if ``cnn.find_sources`` in a 3D analysis, ``find-sources``."""
        steps = ["observations", "datasets"]
        if self.config.cnn.find_sources and self.config.datasets.type == "3d":
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
        """Produce reduced datasets; with ``background.method: cnn``, CNN backgrounds; with
        ``fov_auto``, the runs' templates normalised outside one mask found in their counts."""
        settings = self.config.datasets
        if settings.background.method == "fov_auto" and settings.type != "3d":
            raise ValueError("datasets.background.method 'fov_auto' is for 3D map datasets (datasets.type: 3d)")
        if settings.type == "1d" or not settings.stack:
            self.run_datasets = None
            super().get_datasets()
            if not settings.stack:
                self.datasets = self.run_datasets = self._with_fov_auto(self.datasets)
            return
        # Stacked: keep the runs too, so that find-sources can search them jointly, each
        # on its own pointing (a stacked map centred on the target hides extended sources)
        settings.stack = False
        try:
            super().get_datasets()
        finally:
            settings.stack = True
        self.run_datasets = self._with_fov_auto(self.datasets)
        stacked = self._create_reference_dataset(name="stacked")
        for dataset in self.run_datasets:
            stacked.stack(dataset)
        self.datasets = Datasets([stacked])

    def _spectrum_extraction(self):
        """gammapy's 1D reduction; with ``cnn``, without its check for OFF counts."""
        if self.config.datasets.background.method != "cnn":
            return super()._spectrum_extraction()
        dataset_maker = self._create_dataset_maker()
        safe_mask_maker = self._create_safe_mask_maker()
        background_maker = self._create_background_maker()
        reference = self._create_reference_dataset()
        datasets = []
        for observation in self.observations:
            dataset = dataset_maker.run(reference.copy(name=str(observation.obs_id)), observation)
            dataset = background_maker.run(dataset, observation)
            datasets.append(safe_mask_maker.run(dataset, observation))
        self.datasets = Datasets(datasets)
        if self.config.datasets.stack:
            self.datasets = Datasets([self.datasets.stack_reduce(name="stacked")])

    def _with_fov_auto(self, datasets):
        """The runs with ``fov_auto`` backgrounds (one mask for all of them), or as they are."""
        settings = self.config.datasets.background
        if settings.method != "fov_auto":
            return datasets
        options = dict(settings.parameters)
        if settings.exclusion:
            options["exclusion_mask"] = Map.read(make_path(settings.exclusion))
        try:
            maker = AutoExclusionFoVBackgroundMaker(**options)
        except TypeError as error:
            raise ValueError(f"datasets.background.parameters for method 'fov_auto': {error}") from None
        log.info("Normalising the runs' background templates outside the excesses of their counts")
        return maker.run(Datasets(list(datasets)))

    def _create_background_maker(self):
        settings = self.config.datasets.background
        if settings.method == "fov_auto":
            return None  # all runs at once, after the reduction (`_with_fov_auto`)
        if settings.method != "cnn":
            return super()._create_background_maker()
        if settings.exclusion:
            log.warning("datasets.background.exclusion is not used by the CNN background maker")
        try:
            maker = CNNBackgroundMaker(network=_expand(self.config.cnn.background_network),
                                       **settings.parameters)
        except TypeError as error:
            raise ValueError(f"datasets.background.parameters for method 'cnn': {error}") from None
        log.info(f"Creating CNNBackgroundMaker with network {maker.network}")
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
        dataset's background method, except ``fov_auto``: there it searches on
        the datasets' normalised templates, which keep sources of a degree.
        """
        dataset = self.stacked_dataset()
        if not isinstance(dataset, MapDataset):
            raise ValueError(
                f"find-sources needs a 3D map dataset (datasets.type: 3d), got a {dataset.tag}"
            )
        cnn = self.config.cnn
        finder = CNNSourceFinder(
            network=_expand(cnn.finder_network), threshold=cnn.threshold,
            background_network=(None if self.config.datasets.background.method == "fov_auto"
                                else _expand(cnn.background_network)), refine=cnn.refine, rescue=cnn.rescue,
            max_candidates=cnn.max_candidates,
        )
        runs = getattr(self, "run_datasets", None)
        if runs is not None and len(runs) > 1:
            # jointly, each run on its own pointing (CNNSourceFinder.run on Datasets)
            self.candidates = finder.run(Datasets(list(runs)))
        else:
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
        none), integrated over the energy range. It includes the background's
        systematic error measured in the map's source-free part
        (`~gammapy_cnn.background.systematic_fraction`, ``eps``): sqrt_ts / sqrt(1 +
        eps^2 B), with B the background in the correlation circle; eps is 0
        when Poisson noise explains the counts.

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
        result = estimator.run(dataset)
        sqrt_ts = _plane(result["sqrt_ts"])
        counts = _plane(energy_integrated_image(dataset.counts, dataset.mask_safe)).data
        background = _plane(energy_integrated_image(_background_cube(dataset), dataset.mask_safe)).data
        valid = (np.ones(counts.shape, bool) if dataset.mask_safe is None
                 else _plane(energy_integrated_image(dataset.mask_safe)).data > 0)
        eps = systematic_fraction(counts, background, away_from_excesses(counts, background, valid))
        sqrt_ts.meta = dict(sqrt_ts.meta or {}, background_systematic=eps)
        if eps > 0:
            sqrt_ts.data = sqrt_ts.data / np.sqrt(1 + eps**2 * _plane(result["npred_background"]).data)
        return sqrt_ts

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
        counts = energy_integrated_image(dataset.counts, dataset.mask_safe)
        background = energy_integrated_image(_background_cube(dataset), dataset.mask_safe)
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
        ``candidates.reg`` (DS9), ``candidate_models.yaml``, ``models.yaml``
        (the analysis' models, fitted when the fit ran), ``flux_points.ecsv``
        and, for 3D analyses, ``summary.png``; each when there is something to write.
        Everything is first written to a temporary folder beside ``outdir``; a
        failure leaves ``outdir`` untouched.

        Parameters
        ----------
        outdir : str or `~pathlib.Path`
            Output folder (``~`` and ``$VARS`` are expanded; a relative path is
            relative to the current folder, and ``"."``, gammapy's default
            ``general.outdir``, is the current folder itself). Created if needed.
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
        models = self.models
        if models is not None and len(models):
            names["fitted_models"] = "models.yaml"
        if self.flux_points is not None:
            names["flux_points"] = "flux_points.ecsv"
        figure = figure and self.config.datasets.type == "3d"
        if figure:
            names["summary"] = "summary.png"
        existing = [name for name in names.values() if (outdir / name).exists()]
        if existing and not overwrite:
            raise FileExistsError(f"{outdir} already holds {existing}; use overwrite=True")

        with atomic_directory(outdir) as tmp:
            (tmp / names["config"]).write_text(self.config.to_yaml())
            self.datasets.write(tmp / names["datasets"], overwrite=True)
            if self.candidates is not None:
                self.candidates.write(tmp / names["candidates"], format="ascii.ecsv")
                write_ds9(self.candidates, tmp / names["regions"])
                self.candidate_models.write(tmp / names["models"], overwrite=True,
                                            write_covariance=False)
            if "fitted_models" in names:
                models.write(tmp / names["fitted_models"], overwrite=True, write_covariance=False)
            if self.flux_points is not None:
                self.flux_points.write(tmp / names["flux_points"], format="ecsv")
            if figure:
                self.plot_summary().savefig(tmp / names["summary"], dpi=110)
            written = sorted(p.name for p in tmp.iterdir())
        return {key: outdir / name for key, name in names.items() if name in written}
