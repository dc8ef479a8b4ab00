"""Integral fluxes of the monitor's light curves, from excess counts and a run's effective area."""

import astropy.units as u
import numpy as np
from gammapy.modeling.models import create_crab_spectral_model
from scipy.integrate import trapezoid

from ..utils import to_quantity

__all__ = ["ExcessToFlux"]

#: The reference spectrum: gammapy's H.E.S.S. Crab power law (index 2.63).
CRAB = create_crab_spectral_model("hess_pl")
#: Offsets (deg) at which the Crab's count rate is tabulated, and true-energy nodes per decade.
_OFFSETS = np.linspace(0.0, 3.0, 31)
_NODES_PER_DECADE = 24


class ExcessToFlux:
    """The integral flux above ``energy_min`` of a source with a given excess.

    A source of 1 Crab at offset ``r`` gives ``R(r) = integral A(E, r) phi(E) dE``
    counts per second of livetime, from ``energy_min`` to ``energy_max``, with
    ``A`` the run's effective area and ``phi`` the Crab spectrum (`CRAB`).
    An excess of ``N`` counts in ``t`` seconds of a window is then
    ``N / (R(r) t f)`` Crab, with ``f`` the run's live fraction, and that times
    the Crab's integral flux above ``energy_threshold`` in cm-2 s-1. Two
    approximations, as in any counts-to-flux conversion before a spectral fit:
    the source has the Crab's spectral shape, and events above the
    reconstructed-energy threshold are photons above the same true energy (no
    energy dispersion). A window's excess counts are those of the finder's
    local fit.

    Parameters
    ----------
    aeff : `~gammapy.irf.EffectiveAreaTable2D`
        The run's effective area.
    energy_min, energy_max : `~astropy.units.Quantity`
        Energy range of the counts maps.
    live_fraction : float
        Livetime over good time of the run (1 - dead time). Default 1.
    energy_threshold : `~astropy.units.Quantity`, optional
        Energy above which fluxes are given. Default ``energy_min``;
        `from_observation` takes the run's: where its effective area reaches
        10% of its maximum (gammapy's ``aeff-max`` safe mask), so that a flux
        is not an extrapolation to energies the instrument barely sees.
    """

    def __init__(self, aeff, energy_min, energy_max, live_fraction=1.0, energy_threshold=None):
        energy_min = to_quantity(energy_min, "TeV", "energy_min", positive=True)
        energy_max = to_quantity(energy_max, "TeV", "energy_max", positive=True)
        if not energy_max > energy_min:
            raise ValueError(f"energy_max ({energy_max}) must be above energy_min ({energy_min})")
        if not 0 < float(live_fraction) <= 1:
            raise ValueError(f"live_fraction must be in (0, 1], got {live_fraction}")
        self.energy_min, self.energy_max = energy_min, energy_max
        self.energy_threshold = energy_min if energy_threshold is None else to_quantity(
            energy_threshold, "TeV", "energy_threshold", positive=True)
        self.live_fraction = float(live_fraction)
        decades = np.log10((energy_max / energy_min).to_value(""))
        energy = np.geomspace(energy_min, energy_max, max(int(decades * _NODES_PER_DECADE), 2) + 1)
        area = aeff.evaluate(offset=_OFFSETS[:, None] * u.deg, energy_true=energy[None, :]).to_value("cm2")
        dnde = CRAB(energy).to_value("cm-2 s-1 TeV-1")
        #: counts per second of livetime of a 1 Crab source, per offset of `_OFFSETS`
        self.crab_rate = trapezoid(np.nan_to_num(area) * dnde, energy.to_value("TeV"), axis=-1)
        self.crab_flux = CRAB.integral(self.energy_threshold, 1e3 * u.TeV).to("cm-2 s-1")

    @classmethod
    def from_observation(cls, observation, energy_axis):
        """For a DL3 run with an effective area, over ``energy_axis``'s range; None without one."""
        try:
            aeff = observation.aeff
        except (KeyError, OSError, ValueError):
            aeff = None
        if aeff is None:
            return None
        # dead time only: gaps between good time intervals are the monitor's to skip (its ``gti``)
        elapsed = observation.gti.time_sum.to_value("s") if observation.gti is not None else \
            observation.observation_time_duration.to_value("s")
        live = observation.observation_live_time_duration.to_value("s")
        fraction = min(live / elapsed, 1.0) if elapsed > 0 and live > 0 else 1.0
        energy = np.geomspace(energy_axis.edges[0], energy_axis.edges[-1], 200)
        area = np.nan_to_num(aeff.evaluate(offset=0.5 * u.deg, energy_true=energy).to_value("m2"))
        above = np.nonzero(area >= 0.1 * area.max())[0] if area.max() > 0 else [0]
        return cls(aeff, energy_axis.edges[0], energy_axis.edges[-1], live_fraction=fraction,
                   energy_threshold=energy[above[0]])

    def __call__(self, excess, offset, seconds):
        """Flux (cm-2 s-1) and Crab units of ``excess`` counts at ``offset`` in a window of ``seconds``.

        NaN where the effective area vanishes (beyond the tabulated offsets too).
        """
        offset = to_quantity(offset, "deg", "offset").to_value("deg")
        rate = np.interp(offset, _OFFSETS, self.crab_rate, right=0.0)
        exposure = rate * float(seconds) * self.live_fraction
        crab = np.divide(excess, exposure, out=np.full(np.shape(exposure), np.nan), where=exposure > 0)
        return crab * self.crab_flux.to_value("cm-2 s-1"), crab
