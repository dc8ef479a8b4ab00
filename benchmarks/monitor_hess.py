"""The real-time monitor replayed on H.E.S.S. DR1 runs: alerts, tracks, false alerts per hour, speed.

Usage::

    python benchmarks/monitor_hess.py --output docs/results/monitor_hess.md

Every Crab Nebula and PKS 2155-304 run, and the ten source-free runs (3C 273,
NGC 1068 and 1ES 0414+009 fields, none detected by H.E.S.S. in these runs),
are replayed through `gammapy_cnn.realtime.Monitor` as fast as possible, in
1 s chunks, with its default timescales (10, 30, 100, 300, 1000 s and
cumulative) and the shipped networks. Per run: the alerts (a steady source
should give exactly one, "new", near it; a source-free run none), the tracks,
the finder's time per window and the events processed per second of wall
clock. Alerts in source-free runs are false; their rate per hour of data is
the monitor's false-alarm rate on real data (goal: <= 1 per 10 h).
"""

import argparse
import time
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord

from gammapy_cnn import CNNSourceFinder
from gammapy_cnn.data import read_observations
from gammapy_cnn.example_data import find_hess_dr1
from gammapy_cnn.realtime import Monitor, alert_significance, false_alarm_record, replay, update_false_alarm_card
from gammapy_cnn.utils import cpu_model, write_text_atomic

TARGETS = {
    "Crab Nebula": (SkyCoord(83.633, 22.0145, unit="deg"), [23523, 23526, 23559, 23592]),
    "PKS 2155-304": (SkyCoord(329.717, -30.226, unit="deg"), list(range(33787, 33802))),
    "source-free": (None, [20275, 20915, 22997, 23077, 25345, 25443, 25511, 28981, 29177, 29556]),
}
NEAR = 0.15  # deg: an alert this close to the target is the target


def fitted_flux(observation, position, energy_threshold):
    """Integral flux above ``energy_threshold`` (cm-2 s-1) of a 3D likelihood fit of the run.

    gammapy's own answer on the same run: a 3 x 3 deg cube with the run's IRFs
    (safe mask: 10% of the maximum effective area, 2.5 deg offset), the IRF
    background scaled outside 0.3 deg of the source, and a point source at its
    known position with a power law of free amplitude and index.
    """
    from gammapy.datasets import MapDataset
    from gammapy.makers import FoVBackgroundMaker, MapDatasetMaker, SafeMaskMaker
    from gammapy.maps import Map, MapAxis, WcsGeom
    from gammapy.modeling import Fit
    from gammapy.modeling.models import FoVBackgroundModel, PointSpatialModel, PowerLawSpectralModel, SkyModel

    energy = MapAxis.from_energy_bounds(0.1, 100, 15, "TeV", name="energy")
    energy_true = MapAxis.from_energy_bounds(0.05, 200, 30, "TeV", name="energy_true")
    geom = WcsGeom.create(skydir=position, width=3.0, binsz=0.02, axes=[energy], frame="icrs")
    dataset = MapDatasetMaker().run(MapDataset.create(geom, energy_axis_true=energy_true, name="run"), observation)
    dataset = SafeMaskMaker(methods=["aeff-max", "offset-max"], aeff_percent=10,
                            offset_max=2.5 * u.deg).run(dataset, observation)
    exclusion = Map.from_geom(geom.to_image(), data=geom.to_image().separation(position).deg > 0.3)
    dataset = FoVBackgroundMaker(method="scale", exclusion_mask=exclusion).run(dataset)
    spectrum = PowerLawSpectralModel(index=2.6, amplitude=3e-11 * u.Unit("cm-2 s-1 TeV-1"), reference=1 * u.TeV)
    spatial = PointSpatialModel.from_position(position)
    spatial.lon_0.frozen = spatial.lat_0.frozen = True
    dataset.models = [SkyModel(spectrum, spatial, name="target"), FoVBackgroundModel(dataset_name="run")]
    if not Fit().run([dataset]).success:
        return np.nan
    return float(spectrum.integral(energy_threshold, 1000 * u.TeV).to_value("cm-2 s-1"))


def replay_run(observation, finder):
    monitor = Monitor.from_observation(observation, finder)
    began = time.perf_counter()
    alerts = replay(observation, monitor)
    wall = time.perf_counter() - began
    return monitor, alerts, wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=find_hess_dr1())
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    parser.add_argument("--update-card", action="store_true",
                        help="record the false alerts of the source-free runs in the monitor's false-alarm card")
    args = parser.parse_args()
    if args.data is None:
        raise SystemExit("H.E.S.S. DR1 not found: set $GAMMAPY_DATA or give --data")
    finder = CNNSourceFinder()
    rows, started = [], time.time()
    for target in args.targets:
        position, obs_ids = TARGETS[target]
        for observation in read_observations(args.data, obs_ids):
            monitor, alerts, wall = replay_run(observation, finder)
            livetime = float(observation.observation_live_time_duration.to_value("s"))
            near = [a for a in alerts if position is not None
                    and SkyCoord(a.ra, a.dec, unit="deg").separation(position).deg < NEAR]
            first = min((a.time for a in near), default=np.nan)
            seconds = np.array([w["seconds"] for w in monitor.windows])
            # the target's flux: its track's cumulative windows (the whole run so far), in Crab units
            target_tracks = [t for t in monitor.tracks
                             if position is not None and t.position.separation(position).deg < NEAR]
            cumulative = [r["flux_crab"] for t in target_tracks for r in t.light_curve if np.isnan(r["timescale"])]
            rows.append(dict(
                target=target, obs_id=observation.obs_id, livetime=livetime, events=len(observation.events.table),
                windows=len(monitor.windows), tracks=len(monitor.tracks), alerts=len(alerts),
                target_alerts=len(near), other_alerts=len(alerts) - len(near),
                first_alert=(first - observation.tstart.tt.mjd) * 86400 if near else np.nan,
                alert_latency=float(np.max([a.latency for a in alerts])) if alerts else np.nan,
                window_median=float(np.median(seconds)), window_max=float(seconds.max()), wall=wall,
                flux_crab=float(cumulative[-1]) if cumulative else np.nan,
                flux_ratio=np.nan,
            ))
            if position is not None and cumulative:
                flux = [r["flux"] for t in target_tracks for r in t.light_curve if np.isnan(r["timescale"])][-1]
                rows[-1]["flux_ratio"] = flux / fitted_flux(observation, position, monitor.to_flux.energy_threshold)
            row = rows[-1]
            print(f"{target} {row['obs_id']}: {row['alerts']} alert(s) ({row['target_alerts']} on target), "
                  f"{row['tracks']} tracks, {row['windows']} windows in {wall:.1f} s", flush=True)
    write_text_atomic(args.output, report(rows, args, time.time() - started))
    free = [r for r in rows if r["target"] == "source-free"]
    if args.update_card and free:
        record = false_alarm_record(sum(r["other_alerts"] for r in free), sum(r["livetime"] for r in free) / 3600,
                                    threshold=alert_significance(), runs=[int(r["obs_id"]) for r in free],
                                    command="python benchmarks/monitor_hess.py --update-card --output "
                                            f"{args.output}")
        update_false_alarm_card("hess_dr1_source_free", record)


def report(rows, args, elapsed):
    lines = ["# The real-time monitor on H.E.S.S. DR1 runs", "", __doc__.split("\n\n", 2)[2].strip(), "",
             "| target | run | livetime [s] | events | windows | tracks | alerts (on target / other) | "
             "first alert on target [s after start] | max alert latency [s] | finder per window, median / max [s] "
             "| events per s of wall clock | target flux, whole run [Crab] | monitor / likelihood fit flux |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['obs_id']} | {r['livetime']:.0f} | {r['events']} | {r['windows']} | "
                     f"{r['tracks']} | {r['target_alerts']} / {r['other_alerts']} | {r['first_alert']:.0f} | "
                     f"{r['alert_latency']:.3f} | {r['window_median']:.3f} / {r['window_max']:.3f} | "
                     f"{r['events'] / r['wall']:.0f} | {r['flux_crab']:.2f} | {r['flux_ratio']:.2f} |")
    lines += ["", "## Summary", ""]
    for target in dict.fromkeys(r["target"] for r in rows):
        group = [r for r in rows if r["target"] == target]
        hours = sum(r["livetime"] for r in group) / 3600
        other = sum(r["other_alerts"] for r in group)
        line = f"- **{target}** ({len(group)} runs, {hours:.1f} h): "
        if target == "source-free":
            line += f"{other} false alert(s), {other / hours:.2f} per hour (goal <= 0.1)."
        else:
            one = sum(r["target_alerts"] == 1 for r in group)
            ratios = [r["flux_ratio"] for r in group if np.isfinite(r["flux_ratio"])]
            line += (f"flux / likelihood fit median {np.median(ratios):.3f} (range {min(ratios):.2f}-"
                     f"{max(ratios):.2f}; goal within 10%); " if ratios else "")
            line += (f"exactly one alert on the target in {one} of {len(group)} runs "
                     f"(runs without one: {[r['obs_id'] for r in group if r['target_alerts'] == 0]}; "
                     f"with more: {[r['obs_id'] for r in group if r['target_alerts'] > 1]}); "
                     f"{other} alert(s) elsewhere ({other / hours:.2f} per hour).")
        lines.append(line)
    walls = np.array([r["wall"] for r in rows])
    events = np.array([r["events"] for r in rows])
    live = np.array([r["livetime"] for r in rows])
    lines += [f"- Speed: median {np.median(events / walls):.0f} events and {np.median(live / walls):.0f} s of "
              f"data per second of wall clock (H.E.S.S. runs hold ~{np.median(events / live):.0f} events/s, "
              f"after the DL3 cuts). The finder takes {np.median([r['window_median'] for r in rows]):.2f} s per "
              f"window (median; windows that fall due together go through the networks in one batched "
              f"call, and each gets an equal share of its time).",
              "- Flux: the last cumulative window of the target's track (the whole run), from the run's "
              "effective area and the excess's energy shares measured in an aperture (`ExcessToFlux`); "
              "NaN where the target was not found. "
              "Beside it, gammapy's 3D likelihood fit of the same run (`fitted_flux`: IRFs, safe mask, IRF "
              "background scaled outside 0.3 deg, power law with free index at the known position), both "
              "integrated above the run's threshold (10% of the maximum effective area).",
              "",
              f"Command: `python benchmarks/monitor_hess.py{' --update-card' if args.update_card else ''} "
              f"--output {args.output}`; machine: {cpu_model()}, 2 cores; {elapsed / 60:.1f} min."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
