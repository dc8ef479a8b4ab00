"""Simulation of labelled training and test maps, with gammapy as the physics."""

from .irf import DEFAULT_IRF_NAMES, default_irf, load_irf
from .sampler import CRAB_AMPLITUDE, SimulatedMap, SimulationTemplate, simulate_with_gammapy
from .scenario import DiffuseParameters, MapParameters, Scenario, SourceParameters

__all__ = [
    "CRAB_AMPLITUDE",
    "DEFAULT_IRF_NAMES",
    "DiffuseParameters",
    "MapParameters",
    "Scenario",
    "SimulatedMap",
    "SimulationTemplate",
    "SourceParameters",
    "default_irf",
    "load_irf",
    "simulate_with_gammapy",
]
