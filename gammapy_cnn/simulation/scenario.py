"""Scenario: what the simulated maps look like, each parameter fixed or random.

A scenario is read from YAML. Every physical parameter is either a fixed
value (``livetime: 100 s``) or a distribution::

    livetime: {dist: log-uniform, min: 10 s, max: 1800 s}
    n_sources: {dist: integer, min: 0, max: 3}
    source_extension: {dist: choice, values: [0 deg, 0.1 deg], weights: [0.8, 0.2]}

Bare numbers are in the parameter's unit (deg, s, Crab). Invalid input raises a
``ValueError`` whose message names the field.
"""

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import astropy.units as u
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from ..utils import ENERGY_RANGE, NATIVE_BINSZ, NATIVE_ENERGY_NBIN, NATIVE_NPIX, to_quantity

__all__ = ["DiffuseParameters", "Distribution", "MapParameters", "MORPHOLOGIES", "Scenario", "SourceParameters"]

_Value = float | int | str

_UNITS = {
    "pointing_ra": "deg",
    "pointing_dec": "deg",
    "livetime": "s",
    "n_sources": "",
    "source_offset": "deg",
    "source_flux": "",
    "source_index": "",
    "source_extension": "deg",
    "shell_radius": "deg",
    "shell_width": "deg",
    "diffuse_probability": "",
    "diffuse_flux": "",
    "diffuse_width": "deg",
    "diffuse_offset": "deg",
    "background_norm": "",
    "background_tilt": "",
    "background_gradient": "",
    "acceptance_quadratic": "",
    "acceptance_quartic": "",
}
_NON_NEGATIVE = {"livetime", "n_sources", "source_offset", "source_flux", "source_extension",
                 "shell_radius", "shell_width", "diffuse_probability", "diffuse_flux",
                 "diffuse_width", "diffuse_offset", "background_norm", "background_gradient"}
#: Spatial models of the simulated sources (gammapy's names, lower case).
MORPHOLOGIES = ("point", "gaussian", "disk", "shell")


def _to_float(value, unit, name):
    """A value in ``unit``; bare numbers are taken to be in that unit already."""
    return float(to_quantity(value, unit or u.dimensionless_unscaled, name, bare_numbers=True).value)


class Distribution(BaseModel):
    """A fixed value or a random distribution of one scenario parameter.

    Values may carry units as strings (``"100 s"``); they are converted to the
    parameter's unit when the scenario is validated.
    """

    model_config = ConfigDict(extra="forbid")

    dist: Literal["fixed", "uniform", "log-uniform", "normal", "integer", "choice"] = "fixed"
    value: _Value | None = None
    min: _Value | None = None
    max: _Value | None = None
    mean: _Value | None = None
    sigma: _Value | None = None
    values: list[_Value] | None = None
    weights: list[float] | None = None

    def converted(self, unit, name):
        """Copy with every value as a float in ``unit``, checked for consistency."""
        data = self.model_dump()
        for key in ("value", "min", "max", "mean", "sigma"):
            if data[key] is not None:
                data[key] = _to_float(data[key], unit, f"{name}.{key}")
        if data["values"] is not None:
            data["values"] = [_to_float(v, unit, f"{name}.values") for v in data["values"]]
        need = {
            "fixed": ("value",), "uniform": ("min", "max"), "log-uniform": ("min", "max"),
            "integer": ("min", "max"), "normal": ("mean", "sigma"), "choice": ("values",),
        }[self.dist]
        missing = [key for key in need if data[key] is None]
        if missing:
            raise ValueError(f"{name}: distribution {self.dist!r} needs {missing}")
        if self.dist in ("uniform", "log-uniform", "integer") and data["min"] > data["max"]:
            raise ValueError(f"{name}: min {data['min']} is larger than max {data['max']}")
        if self.dist == "log-uniform" and data["min"] <= 0:
            raise ValueError(f"{name}: log-uniform needs min > 0, got {data['min']}")
        if self.dist == "choice":
            if not data["values"]:
                raise ValueError(f"{name}: choice needs at least one value")
            if data["weights"] is not None:
                if len(data["weights"]) != len(data["values"]) or min(data["weights"]) < 0:
                    raise ValueError(f"{name}: weights must be one non-negative number per value")
        return Distribution(**data)

    @property
    def bounds(self):
        """(lowest, highest) value this distribution can return."""
        if self.dist == "fixed":
            return self.value, self.value
        if self.dist == "normal":
            return -np.inf, np.inf
        if self.dist == "choice":
            return min(self.values), max(self.values)
        return self.min, self.max

    def sample(self, rng):
        """Draw one value with a `numpy.random.Generator`."""
        if self.dist == "fixed":
            return self.value
        if self.dist == "uniform":
            return rng.uniform(self.min, self.max)
        if self.dist == "log-uniform":
            return float(np.exp(rng.uniform(np.log(self.min), np.log(self.max))))
        if self.dist == "integer":
            return int(rng.integers(int(self.min), int(self.max) + 1))
        if self.dist == "normal":
            return rng.normal(self.mean, self.sigma)
        p = None if self.weights is None else np.asarray(self.weights) / np.sum(self.weights)
        return self.values[rng.choice(len(self.values), p=p)]


def _as_distribution(value):
    if isinstance(value, Distribution):
        return value
    if isinstance(value, dict):
        return Distribution(**value)
    return Distribution(dist="fixed", value=value)


class Geometry(BaseModel):
    """Map geometry: square WCS image centred on the pointing, with an energy axis."""

    model_config = ConfigDict(extra="forbid")

    npix: int = NATIVE_NPIX
    binsz: str = str(NATIVE_BINSZ)
    energy_min: str = str(ENERGY_RANGE[0])
    energy_max: str = str(ENERGY_RANGE[1])
    energy_nbin: int = NATIVE_ENERGY_NBIN

    @field_validator("npix", "energy_nbin")
    @classmethod
    def _positive(cls, value, info):
        if value < 1:
            raise ValueError(f"{info.field_name} must be >= 1, got {value}")
        return value

    @model_validator(mode="after")
    def _check_units(self):
        binsz = _to_float(self.binsz, "deg", "geometry.binsz")
        if not 0 < binsz <= 0.2:
            raise ValueError(f"geometry.binsz must be within (0, 0.2] deg, got {self.binsz}")
        emin = _to_float(self.energy_min, "TeV", "geometry.energy_min")
        emax = _to_float(self.energy_max, "TeV", "geometry.energy_max")
        if not 0 < emin < emax:
            raise ValueError("geometry.energy_min must be positive and below geometry.energy_max")
        return self

    @property
    def width(self):
        return self.npix * u.Quantity(self.binsz).to("deg")


class Scenario(BaseModel):
    """The parameters of a simulated observation, each fixed or random.

    The defaults make the broad training scenario (0-3 sources of 0.02-3
    Crab, 10 s to 30 min, three zenith angles, background level and shape
    varying by +-20%). ``Scenario.preset("original")`` reproduces the
    original CNN-Cleaner/Regressor design: one 1-Crab source, 100 s.

    Flux is in units of the Crab Nebula: a power law whose amplitude at
    1 TeV is ``source_flux`` times 2.83e-11 cm-2 s-1 TeV-1 (HEGRA), with
    index ``source_index``. ``background_norm`` scales the IRF background,
    ``background_tilt`` changes its spectral index (gammapy's
    `~gammapy.modeling.models.FoVBackgroundModel` convention, reference
    1 TeV) and ``background_gradient`` adds a linear spatial gradient of that
    fractional amplitude at 1 deg from the centre, in a random direction.
    ``acceptance_quadratic`` and ``acceptance_quartic`` change the radial
    acceptance of the IRF background by the factor
    ``exp(a (r / 2.5 deg)^2 + b (r / 2.5 deg)^4)`` at offset ``r``: real
    instruments' acceptances are flatter or steeper than any one IRF's. Off
    (0) by default and in the shipped presets; for fine-tuning.
    """

    model_config = ConfigDict(extra="forbid")

    irf: str | list[str] = ["default-z20", "default-z40", "default-z60"]
    geometry: Geometry = Geometry()
    pointing_ra: Distribution = Distribution(dist="uniform", min=0, max=360)
    pointing_dec: Distribution = Distribution(dist="uniform", min=-60, max=60)
    livetime: Distribution = Distribution(dist="log-uniform", min=10, max=1800)
    n_sources: Distribution = Distribution(dist="integer", min=0, max=3)
    source_offset: Distribution = Distribution(dist="uniform", min=0, max=2.3)
    source_flux: Distribution = Distribution(dist="log-uniform", min=0.02, max=3)
    source_index: Distribution = Distribution(dist="uniform", min=2.0, max=3.0)
    source_extension: Distribution = Distribution(
        dist="choice", values=[0, 0.03, 0.06, 0.1, 0.2], weights=[0.6, 0.1, 0.1, 0.1, 0.1]
    )
    source_morphology: dict[str, float] | None = None
    shell_radius: Distribution = Distribution(dist="uniform", min=0.2, max=1.0)
    shell_width: Distribution = Distribution(dist="uniform", min=0.05, max=0.2)
    min_separation: str = "0.2 deg"
    diffuse_probability: Distribution = Distribution(dist="fixed", value=0)
    diffuse_flux: Distribution = Distribution(dist="log-uniform", min=0.05, max=0.5)
    diffuse_width: Distribution = Distribution(dist="uniform", min=0.1, max=0.5)
    diffuse_offset: Distribution = Distribution(dist="uniform", min=0, max=2.0)
    background_norm: Distribution = Distribution(dist="uniform", min=0.8, max=1.2)
    background_tilt: Distribution = Distribution(dist="uniform", min=-0.2, max=0.2)
    background_gradient: Distribution = Distribution(dist="uniform", min=0, max=0.1)
    acceptance_quadratic: Distribution = Distribution(dist="fixed", value=0)
    acceptance_quartic: Distribution = Distribution(dist="fixed", value=0)

    @field_validator(*_UNITS, mode="before")
    @classmethod
    def _parse_distribution(cls, value, info):
        try:
            return _as_distribution(value).converted(_UNITS[info.field_name], info.field_name)
        except ValidationError as error:
            raise ValueError(f"{info.field_name}: {error}")

    @field_validator("source_morphology", mode="before")
    @classmethod
    def _morphology_weights(cls, value):
        if value is None:
            return None
        if isinstance(value, str):
            value = {value: 1.0}
        if not isinstance(value, dict) or not value:
            raise ValueError(f"give weights per morphology, e.g. {{point: 0.5, shell: 0.5}}, got {value!r}")
        unknown = set(value) - set(MORPHOLOGIES)
        if unknown:
            raise ValueError(f"unknown morphology {sorted(unknown)}; choose from {list(MORPHOLOGIES)}")
        weights = {key: float(weight) for key, weight in value.items()}
        if min(weights.values()) < 0 or sum(weights.values()) <= 0:
            raise ValueError(f"morphology weights must be non-negative and not all zero, got {weights}")
        return weights

    @field_validator("irf")
    @classmethod
    def _irf_list(cls, value):
        value = [value] if isinstance(value, str) else list(value)
        if not value:
            raise ValueError("irf: give at least one IRF name or file")
        return value

    @model_validator(mode="after")
    def _check_ranges(self):
        for name in _NON_NEGATIVE:
            low, _ = getattr(self, name).bounds
            if low < 0:
                raise ValueError(f"{name} must not be negative (lowest possible value {low})")
        _, probability = self.diffuse_probability.bounds
        if probability > 1:
            raise ValueError(f"diffuse_probability must be within [0, 1], got up to {probability}")
        _, off_max = self.source_offset.bounds
        half = self.geometry.width.to_value("deg") / 2
        if off_max > half:
            raise ValueError(
                f"source_offset up to {off_max} deg lies outside the {2 * half} deg wide map "
                f"(max {half} deg)"
            )
        low, _ = self.livetime.bounds
        if low <= 0:
            raise ValueError("livetime must be positive")
        _to_float(self.min_separation, "deg", "min_separation")
        return self

    @classmethod
    def read(cls, path):
        """Read and validate a YAML scenario file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"scenario file {path} does not exist")
        return cls.from_yaml(path.read_text(), source=str(path))

    @classmethod
    def from_yaml(cls, text, source="<string>"):
        """Validate a YAML scenario given as text."""
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"scenario {source} must be a mapping of parameters")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data):
        try:
            return cls(**data)
        except ValidationError as error:
            raise ValueError(f"invalid scenario: {error}") from None

    @classmethod
    def preset(cls, name):
        """A shipped scenario: ``default``, ``calibration``, ``original``, ``benchmark`` or ``test``."""
        files = resources.files("gammapy_cnn.simulation") / "scenarios"
        path = files / f"{name}.yaml"
        if not path.is_file():
            names = sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))
            raise ValueError(f"unknown scenario preset {name!r}; shipped presets: {names}")
        return cls.from_yaml(path.read_text(), source=name)

    def to_yaml(self):
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)

    def sample(self, rng):
        """Draw the parameters of one map.

        Parameters
        ----------
        rng : `numpy.random.Generator`

        Returns
        -------
        params : `MapParameters`
        """
        irf_index = int(rng.integers(len(self.irf)))
        params = MapParameters(
            irf_index=irf_index,
            pointing_ra=float(self.pointing_ra.sample(rng)) % 360,
            pointing_dec=float(np.clip(self.pointing_dec.sample(rng), -89.9, 89.9)),
            livetime=float(self.livetime.sample(rng)),
            background_norm=float(self.background_norm.sample(rng)),
            background_tilt=float(self.background_tilt.sample(rng)),
            background_gradient=float(self.background_gradient.sample(rng)),
            gradient_angle=float(rng.uniform(0, 2 * np.pi)),
        )
        min_sep = _to_float(self.min_separation, "deg", "min_separation")
        n_sources = int(self.n_sources.sample(rng))
        for _ in range(n_sources):
            for _attempt in range(100):
                offset = float(self.source_offset.sample(rng))
                angle = float(rng.uniform(0, 2 * np.pi))
                dx, dy = offset * np.cos(angle), offset * np.sin(angle)
                if all(np.hypot(dx - s.offset_x, dy - s.offset_y) >= min_sep for s in params.sources):
                    break
            else:
                continue
            source = SourceParameters(
                offset_x=float(dx),
                offset_y=float(dy),
                flux=float(self.source_flux.sample(rng)),
                index=float(self.source_index.sample(rng)),
            )
            source.morphology, source.extension, source.width = self._sample_shape(rng)
            params.sources.append(source)
        _, probability = self.diffuse_probability.bounds
        if probability > 0 and rng.uniform() < float(self.diffuse_probability.sample(rng)):
            params.diffuse = DiffuseParameters(
                flux=float(self.diffuse_flux.sample(rng)),
                width=float(self.diffuse_width.sample(rng)),
                offset=float(self.diffuse_offset.sample(rng)),
                angle=float(rng.uniform(0, np.pi)),
                index=float(self.source_index.sample(rng)),
                modulation=float(rng.uniform(0, 0.5)),
                phase=float(rng.uniform(0, 2 * np.pi)),
            )
        # drawn last, so that scenarios without them draw every other parameter as before
        params.acceptance_quadratic = float(self.acceptance_quadratic.sample(rng))
        params.acceptance_quartic = float(self.acceptance_quartic.sample(rng))
        return params

    def _sample_shape(self, rng):
        """(morphology, extension, width) of one source.

        Without ``source_morphology`` (the presets of the first release) a
        source is a Gaussian of ``source_extension`` when that is > 0, so those
        scenarios draw exactly the maps they always drew.
        """
        if self.source_morphology is None:
            extension = float(self.source_extension.sample(rng))
            return ("gaussian" if extension > 0 else "point"), extension, 0.0
        names = list(self.source_morphology)
        weights = np.array([self.source_morphology[name] for name in names])
        morphology = names[rng.choice(len(names), p=weights / weights.sum())]
        if morphology == "point":
            return morphology, 0.0, 0.0
        if morphology == "shell":
            return morphology, float(self.shell_radius.sample(rng)), float(self.shell_width.sample(rng))
        return morphology, float(self.source_extension.sample(rng)), 0.0


@dataclass
class SourceParameters:
    """One simulated source.

    ``offset_x``/``offset_y`` are its offsets from the map centre in deg, in
    the map's tangent plane (x towards increasing pixel x, y towards
    increasing pixel y); they are not sky coordinates. ``extension`` is the
    Gaussian sigma, the disk radius or the shell's inner radius (gammapy's
    `~gammapy.modeling.models.ShellSpatialModel`), ``width`` the shell's width.
    """

    offset_x: float
    offset_y: float
    flux: float
    index: float
    extension: float = 0.0
    morphology: str = "point"
    width: float = 0.0

    def __post_init__(self):
        if self.morphology not in MORPHOLOGIES:
            raise ValueError(f"morphology must be one of {MORPHOLOGIES}, got {self.morphology!r}")
        if self.morphology == "point" and self.extension > 0:
            self.morphology = "gaussian"

    @property
    def outer_radius(self):
        """Radius in deg that holds the source before the PSF (3 sigma for a Gaussian)."""
        return {"point": 0.0, "gaussian": 3 * self.extension, "disk": self.extension,
                "shell": self.extension + self.width}[self.morphology]


@dataclass
class DiffuseParameters:
    """A Galactic-plane-like band crossing the map.

    Its surface brightness falls off as a Gaussian of ``width`` (deg) away
    from a straight line that passes ``offset`` deg from the map centre at
    position angle ``angle`` (rad); along the line it is modulated by
    ``1 + modulation * sin(2 pi s / 2 deg + phase)``. ``flux`` is in Crab
    units per deg of band length (power law of ``index``).
    """

    flux: float
    width: float
    offset: float
    angle: float
    index: float
    modulation: float = 0.0
    phase: float = 0.0


@dataclass
class MapParameters:
    """The drawn parameters of one map (units: deg, s)."""

    irf_index: int
    pointing_ra: float
    pointing_dec: float
    livetime: float
    background_norm: float
    background_tilt: float
    background_gradient: float
    gradient_angle: float
    sources: list = field(default_factory=list)
    diffuse: DiffuseParameters | None = None
    acceptance_quadratic: float = 0.0
    acceptance_quartic: float = 0.0
