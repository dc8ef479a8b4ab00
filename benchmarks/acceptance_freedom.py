"""How much of a wide source can any counts-only background keep? Oracle estimators on the same maps.

Usage::

    python benchmarks/acceptance_freedom.py --n 10 --output docs/results/acceptance_freedom.md

A counts-only background has to let the acceptance differ from the training
responses (another instrument, zenith, night-sky background): the
`CNNBackgroundMaker` refits a smooth radial factor and a gradient where the
counts demand it. This page asks what that freedom costs on its own, with no
network in the way. The maps and apertures are those of ``extended_sources.md``
(`extended_sources.source_map`: one 1 Crab Gaussian per map, 0.8 deg from the
pointing), at 1800 s; the kept excess is sum(N - B) / sum(true signal) in the
aperture of that page (2 sigma + 0.3 deg). Three oracle
estimators are given the *true* acceptance shape (the IRF template; only its
level is unknown):

- **template, norm outside the aperture**: gammapy's ``FoVBackgroundMaker``
  with a perfect exclusion region (the aperture itself);
- **template x radial factor and gradient, outside the aperture**: the same
  with the maker's acceptance freedom
  (`gammapy_cnn.background.refit_shape`, always applied);
- **template x radial factor and gradient, no exclusion**: the freedom when
  the source is not known to be there.

A network that knew the acceptance exactly and found every wide source could
do no better than the second column with the freedom it needs on unseen
responses; the third is what that freedom does to a source nothing detects.
"""

import argparse
import time
from pathlib import Path

import numpy as np
from extended_sources import aperture_radius, source_map

from gammapy_cnn.background import refit_shape
from gammapy_cnn.example_data import gammapy_data_dir
from gammapy_cnn.simulation import SimulationTemplate
from gammapy_cnn.utils import cpu_model, write_text_atomic

LIVETIME = 1800.0  # s
SIGMAS = (0.3, 0.5, 0.7, 1.0)  # deg
METHODS = ("template, norm outside the aperture", "template x radial factor and gradient, outside the aperture",
           "template x radial factor and gradient, no exclusion")


def kept_fractions(template, sigma, n, rng):
    """Kept excess of each oracle estimator over ``n`` maps, and the aperture's share of the map."""
    binsz = template.binsz.to_value("deg")
    yy, xx = np.mgrid[: template.npix, : template.npix]
    acceptance = template.background(LIVETIME).sum(axis=0)
    kept, signal = np.zeros(len(METHODS)), 0.0
    for _ in range(n):
        _, sim = source_map(template, LIVETIME, "gaussian", sigma, 0.0, rng)
        counts = sim.counts.sum(axis=0).astype(float)
        centre = sim.sources[0]
        aperture = np.hypot(xx - centre["x"], yy - centre["y"]) * binsz < aperture_radius("gaussian", sigma, 0.0)
        outside = ~aperture
        normed = acceptance * counts[outside].sum() / acceptance[outside].sum()
        shaped, _ = refit_shape(counts, normed, outside, min_delta_ts=-np.inf)
        blind, _ = refit_shape(counts, acceptance * counts.sum() / acceptance.sum(), np.ones_like(outside),
                               min_delta_ts=-np.inf)
        kept += [counts[aperture].sum() - b[aperture].sum() for b in (normed, shaped, blind)]
        signal += sim.signal.sum(axis=0)[aperture].sum()
    return kept / signal, aperture.mean()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="maps per cell")
    parser.add_argument("--seed", type=int, default=313131)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    data = gammapy_data_dir()
    irfs = ["default-z20", str(data / "cta-caldb" / "Prod5-North-20deg-AverageAz-4LSTs09MSTs.180000s-v0.1.fits.gz"),
            str(data / "cta-1dc-irf" / "South_z20_50h_irf_file.fits.gz")]
    start = time.time()
    lines = ["# Wide sources: what the acceptance's freedom costs", "", __doc__.split("\n\n", 2)[2].strip(), "",
             "| response | Gaussian sigma [deg] | aperture share of the map | " + " | ".join(METHODS) + " |",
             "|---|---|---|" + "---|" * len(METHODS)]
    for irf in irfs:
        template = SimulationTemplate(irf)
        for sigma in SIGMAS:
            rng = np.random.default_rng([args.seed, int(sigma * 100)])
            kept, share = kept_fractions(template, sigma, args.n, rng)
            lines.append(f"| `{Path(irf).name}` | {sigma:.1f} | {share:.2f} | "
                         + " | ".join(f"{k:.3f}" for k in kept) + " |")
    lines += ["", f"Command: `python benchmarks/acceptance_freedom.py --n {args.n} --seed {args.seed} --output "
              f"{args.output}`; machine: {cpu_model()}, 2 cores; {(time.time() - start) / 60:.1f} min."]
    write_text_atomic(args.output, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
