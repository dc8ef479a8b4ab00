"""Simulation of labelled training and test maps, with gammapy as the physics."""

from .events import REFERENCE_TIME, light_curve_source, simulate_observation
from .irf import DEFAULT_IRF_NAMES, default_irf, load_irf
from .sampler import CRAB_AMPLITUDE, SimulatedMap, SimulationTemplate, simulate_with_gammapy
from .scenario import DiffuseParameters, MapParameters, Scenario, SourceParameters

__all__ = [
    "CRAB_AMPLITUDE",
    "DEFAULT_IRF_NAMES",
    "DiffuseParameters",
    "MapParameters",
    "REFERENCE_TIME",
    "Scenario",
    "SimulatedMap",
    "SimulationTemplate",
    "SourceParameters",
    "default_irf",
    "light_curve_source",
    "load_irf",
    "simulate_observation",
    "simulate_with_gammapy",
]
