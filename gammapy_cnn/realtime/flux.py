"""Integral fluxes of the monitor's light curves, from excess counts and a run's effective area."""

import astropy.units as u
import numpy as np
from gammapy.modeling.models import create_crab_spectral_model
from scipy.integrate import trapezoid

from ..utils import ENERGY_RANGE, to_quantity

__all__ = ["ExcessToFlux", "effective_area", "safe_energy_threshold"]

#: The reference spectrum: gammapy's H.E.S.S. Crab power law (index 2.63).
CRAB = create_crab_spectral_model("hess_pl")
#: Offsets (deg) at which the Crab's count rate is tabulated, and true-energy nodes per decade.
_OFFSETS = np.linspace(0.0, 3.0, 31)
_NODES_PER_DECADE = 24


def effective_area(observation):
    """The run's effective area, or None (a DL3 file without IRFs)."""
    try:
        return observation.aeff
    except (KeyError, OSError, ValueError):
        return None


def safe_energy_threshold(aeff, energy_min=ENERGY_RANGE[0], energy_max=ENERGY_RANGE[1], offset=0.5 * u.deg):
    """Where the effective area at ``offset`` reaches 10% of its maximum (gammapy's ``aeff-max`` safe mask)."""
    energy = np.geomspace(to_quantity(energy_min, "TeV", "energy_min"), to_quantity(energy_max, "TeV", "energy_max"),
                          200)
    area = np.nan_to_num(aeff.evaluate(offset=offset, energy_true=energy).to_value("m2"))
    above = np.nonzero(area >= 0.1 * area.max())[0] if area.max() > 0 else [0]
    return energy[above[0]]


class ExcessToFlux:
    """The integral flux above the maps' lowest energy of a source with a given excess.

    Per energy bin ``i`` of the maps, a source of 1 Crab at offset ``r`` gives
    ``R_i(r) = integral A(E, r) phi(E) dE`` counts per second of livetime over
    the bin, with ``A`` the run's effective area and ``phi`` the Crab spectrum
    (`CRAB`). The excess is shared over the bins (``shares``, e.g. measured
    in an aperture; by default as the Crab's counts are), and its part in bin
    ``i`` is ``N_i / (R_i t f)`` Crab over that bin, with ``t`` the window's
    livetime and ``f`` the run's live fraction. The integral fluxes of the bins
    add up to the flux above the lowest energy (cm-2 s-1), and over the
    Crab's own it is in Crab units. Measured shares make the flux nearly
    independent of the assumed spectrum (only its shape within a bin is the
    Crab's). Approximations, as in any counts-to-flux conversion before a
    spectral fit: no energy dispersion (events in a reconstructed-energy bin are
    photons of that true energy), and the excess counts are those of the
    finder's local fit.

    Parameters
    ----------
    aeff : `~gammapy.irf.EffectiveAreaTable2D`
        The run's effective area.
    energy_edges : `~astropy.units.Quantity`
        Edges of the maps' energy bins; fluxes are above the first one.
    live_fraction : float
        Livetime over good time of the run (1 - dead time). Default 1.
    """

    def __init__(self, aeff, energy_edges, live_fraction=1.0):
        edges = u.Quantity(energy_edges).to("TeV")
        if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges.value) <= 0) or edges[0] <= 0:
            raise ValueError(f"energy_edges must be increasing positive energies (>= 2), got {energy_edges!r}")
        if not 0 < float(live_fraction) <= 1:
            raise ValueError(f"live_fraction must be in (0, 1], got {live_fraction}")
        self.energy_edges = edges
        self.live_fraction = float(live_fraction)
        rates, fluxes = [], []
        for low, high in zip(edges[:-1], edges[1:]):
            nodes = max(int(np.log10((high / low).to_value("")) * _NODES_PER_DECADE), 2) + 1
            energy = np.geomspace(low, high, nodes)
            area = aeff.evaluate(offset=_OFFSETS[:, None] * u.deg, energy_true=energy[None, :]).to_value("cm2")
            dnde = CRAB(energy).to_value("cm-2 s-1 TeV-1")
            rates.append(trapezoid(np.nan_to_num(area) * dnde, energy.to_value("TeV"), axis=-1))
            fluxes.append(CRAB.integral(low, high).to_value("cm-2 s-1"))
        #: (n_bins, n_offsets) counts per second of livetime of a 1 Crab source, per offset of `_OFFSETS`
        self.crab_rate = np.array(rates)
        #: (n_bins,) the Crab's integral flux per bin (cm-2 s-1)
        self.crab_flux = np.array(fluxes)

    @property
    def energy_threshold(self):
        """Fluxes are integrated above this energy (the maps' lowest)."""
        return self.energy_edges[0]

    @classmethod
    def from_observation(cls, observation, energy_axis):
        """For a DL3 run with an effective area, over ``energy_axis``'s bins; None without one."""
        aeff = effective_area(observation)
        if aeff is None:
            return None
        # dead time only: gaps between good time intervals are the monitor's to skip (its ``gti``)
        elapsed = observation.gti.time_sum.to_value("s") if observation.gti is not None else \
            observation.observation_time_duration.to_value("s")
        live = observation.observation_live_time_duration.to_value("s")
        fraction = min(live / elapsed, 1.0) if elapsed > 0 and live > 0 else 1.0
        return cls(aeff, energy_axis.edges, live_fraction=fraction)

    def __call__(self, excess, offset, seconds, shares=None):
        """Flux (cm-2 s-1) and Crab units of ``excess`` counts at ``offset`` in ``seconds`` of good time.

        ``shares``: the excess's fraction in each energy bin (default: the
        Crab's). NaN where the effective area vanishes (beyond the tabulated
        offsets too).
        """
        offset = to_quantity(offset, "deg", "offset").to_value("deg")
        rate = np.array([np.interp(offset, _OFFSETS, r, right=0.0) for r in self.crab_rate])
        if shares is None:
            shares = rate / rate.sum() if rate.sum() > 0 else np.full(len(rate), np.nan)
        shares = np.asarray(shares, float)
        if shares.shape != rate.shape:
            raise ValueError(f"shares need one value per energy bin ({len(rate)}), got {shares.shape}")
        exposure = rate * float(seconds) * self.live_fraction
        seen = exposure > 0
        if not np.any(seen & (shares > 0)):
            return np.nan, np.nan
        flux = float(np.sum(excess * shares[seen] / exposure[seen] * self.crab_flux[seen]))
        return flux, flux / float(self.crab_flux.sum())
