"""High-level, config-driven CNN analysis on top of gammapy's `~gammapy.analysis.Analysis`.

gammapy's `~gammapy.analysis.AnalysisConfig` forbids unknown keys and knows
three background methods (``reflected``, ``fov_background``, ``ring``). This
package extends it by subclassing only (nothing in gammapy is patched), split
as gammapy splits ``gammapy.analysis``:

- ``config``: `CNNAnalysisConfig` reads every gammapy analysis YAML, plus
  ``background: method: cnn`` and a ``cnn:`` section (`CNNConfig`).
- ``core``: `CNNAnalysis` is gammapy's `~gammapy.analysis.Analysis` with the
  CNN background maker and a new step, `CNNAnalysis.find_sources`, that runs
  `~gammapy_cnn.CNNSourceFinder` on the (stacked) dataset;
  `CNNAnalysis.write` writes the datasets, candidates (ECSV, DS9 regions,
  seed models) and a summary figure, atomically, into the folder it is given
  (``gammapy-cnn analysis`` writes into ``--output``, by default the config's
  ``general.outdir``, which gammapy sets to ``.``: the current folder).

and gives the cross-checks a careful user wants on a CNN result:

- ``checks``: `BackgroundComparison` (CNN, `~gammapy.makers.FoVBackgroundMaker`
  and `~gammapy.makers.RingBackgroundMaker` backgrounds of one dataset, side
  by side), `aperture_photometry` (counts, background, excess and Li & Ma
  significance in circles at the candidates, next to
  `~gammapy.estimators.ExcessMapEstimator`'s value at the same place) and
  `exclusion_mask_from_candidates`.
- ``fitting``: `fit_candidates`, a 3D likelihood `~gammapy.modeling.Fit` of
  point sources seeded at the candidates (needs a dataset with IRFs), built
  on the reusable `point_source_models` and `fit_point_sources`.

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

from .checks import BackgroundComparison, aperture_photometry, exclusion_mask_from_candidates
from .config import CNNAnalysisConfig, CNNBackgroundConfig, CNNConfig, CNNDatasetsConfig
from .core import CNNAnalysis
from .fitting import (
    CandidateFitResult,
    bound_positions,
    fit_candidates,
    fit_point_sources,
    point_source_models,
)

__all__ = [
    "BackgroundComparison",
    "CNNAnalysis",
    "CNNAnalysisConfig",
    "CNNBackgroundConfig",
    "CNNConfig",
    "CNNDatasetsConfig",
    "CandidateFitResult",
    "aperture_photometry",
    "bound_positions",
    "exclusion_mask_from_candidates",
    "fit_candidates",
    "fit_point_sources",
    "point_source_models",
]
