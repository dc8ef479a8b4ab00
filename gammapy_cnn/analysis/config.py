"""Configuration of the CNN analysis: gammapy's `~gammapy.analysis.AnalysisConfig` extended.

gammapy's `~gammapy.analysis.AnalysisConfig` forbids unknown keys and knows
three background methods (``reflected``, ``fov_background``, ``ring``). This
module extends it by subclassing only (nothing in gammapy is patched):
`CNNAnalysisConfig` reads every gammapy analysis YAML, plus ``background:
method: cnn`` (`CNNBackgroundConfig`) and a ``cnn:`` section (`CNNConfig`).
"""

import os
from enum import Enum

import yaml
from gammapy.analysis import AnalysisConfig
from gammapy.analysis.config import (
    BackgroundConfig,
    BackgroundMethodEnum,
    DatasetsConfig,
    GammapyBaseConfig,
    deep_update,
)
from gammapy.utils.scripts import read_yaml
from pydantic import Field, field_validator, model_validator

__all__ = [
    "CNNAnalysisConfig",
    "CNNBackgroundConfig",
    "CNNConfig",
    "CNNDatasetsConfig",
]

#: gammapy's background methods plus ``cnn`` and ``fov_auto``; built from gammapy's enum so a
#: method gammapy adds later is accepted here too.
CNNBackgroundMethodEnum = Enum(
    "CNNBackgroundMethodEnum",
    {**{member.name: member.value for member in BackgroundMethodEnum}, "cnn": "cnn", "fov_auto": "fov_auto"},
    type=str,
)


class CNNBackgroundConfig(BackgroundConfig):
    """gammapy's ``datasets.background`` section, whose ``method`` also accepts ``cnn`` and ``fov_auto``.

    With ``method: cnn``, ``parameters`` go to `~gammapy_cnn.CNNBackgroundMaker`
    (e.g. ``batch_size``); the network is ``cnn.background_network``. An
    ``exclusion`` mask is not needed (and not used) by the CNN. With
    ``method: fov_auto`` (3D only), the runs' IRF background templates are
    normalised outside one exclusion mask found in the counts of all runs
    (`~gammapy_cnn.templates.AutoExclusionFoVBackgroundMaker`, which ``parameters``
    go to); an ``exclusion`` file adds regions known in advance.
    """

    method: CNNBackgroundMethodEnum | None = None


class CNNDatasetsConfig(DatasetsConfig):
    """gammapy's ``datasets`` section with `CNNBackgroundConfig`."""

    background: CNNBackgroundConfig = CNNBackgroundConfig()


class CNNConfig(GammapyBaseConfig):
    """The ``cnn:`` section of a `CNNAnalysisConfig`.

    Attributes
    ----------
    background_network : str
        Shipped cleaner network name (``default``, ``original``) or ``.keras`` file
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
    threshold: float | None = Field(None, ge=0.0, le=1.0)
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
    def _cnn_1d_needs_on_region(self):
        datasets = self.datasets
        if datasets.background.method != "cnn" or datasets.type != "1d":
            return self
        on = datasets.on_region
        if on.lon is None or on.lat is None or on.radius is None:
            raise ValueError(
                "datasets.on_region (frame, lon, lat, radius) is needed for a 1D analysis with "
                "background method 'cnn': the CNN background of each run's field of view is "
                "summed over that region"
            )
        if datasets.background.exclusion:
            raise ValueError(
                "datasets.background.exclusion means nothing to background method 'cnn', which "
                "estimates the background from the counts alone: remove it"
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
