"""The real-time monitor on a real H.E.S.S. run: one track and one alert for a steady source,
VOEvent packets that pass the schema, a log with the documented columns, the same alerts
on a second replay, and clear errors for bad input."""

import json

import astropy.units as u
import numpy as np
import pytest
import voeventparse as vp
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.time import Time

from gammapy_cnn import CNNSourceFinder
from gammapy_cnn.realtime import (
    ALERT_LOG_COLUMNS,
    AlertWriter,
    ExcessToFlux,
    Monitor,
    new_files,
    replay,
    safe_energy_threshold,
)
from gammapy_cnn.realtime.flux import CRAB as CRAB_MODEL

from .conftest import HESS_DR1, require

CRAB = SkyCoord(83.633, 22.0145, unit="deg")
CRAB_RUN = 23523


@pytest.fixture(scope="module")
def crab_run():
    from gammapy_cnn.data import read_observations

    return read_observations(require(HESS_DR1), [CRAB_RUN])[0]


@pytest.fixture(scope="module")
def finder():
    return CNNSourceFinder()


def _monitor(run, finder, tmp_path, **kwargs):
    writer = AlertWriter(tmp_path)
    return Monitor.from_observation(run, finder, alert_writer=writer, **kwargs), writer


@pytest.mark.slow
def test_a_steady_source_gives_one_track_and_one_alert(crab_run, finder, tmp_path):
    monitor, writer = _monitor(crab_run, finder, tmp_path / "first")
    alerts = replay(crab_run, monitor)
    assert [a.kind for a in alerts] == ["new"]  # a steady source: no repeated alert, no "flare"
    (alert,) = alerts
    assert SkyCoord(alert.ra, alert.dec, unit="deg").separation(CRAB).deg < 0.15
    crab_tracks = [t for t in monitor.tracks if t.position.separation(CRAB).deg < 0.2]
    assert len(crab_tracks) == 1 and crab_tracks[0].track_id == alert.track_id
    light_curve = monitor.light_curve(alert.track_id)
    for timescale in (100, 300, 1000):  # a 28 min run: found in most windows of 100 s and longer
        rows = light_curve[light_curve["timescale"] == timescale]
        assert len(rows) >= 0.5 * (crab_run.observation_live_time_duration.to_value("s") // timescale)
    # the Crab in Crab units, from the run's effective area (1.2-1.3 measured: a Crab-shaped
    # spectrum, no energy dispersion; a factor 2 off would be a unit or livetime error)
    long_windows = light_curve[light_curve["timescale"] >= 300]
    assert 0.7 < np.median(long_windows["flux_crab"]) < 1.5
    assert light_curve["flux"].unit == u.Unit("cm-2 s-1")
    assert alert.false_alarm_rate < monitor.alert_false_rate.to_value("1/h")
    assert 0 <= alert.latency < 5

    packet = vp.load(open(tmp_path / "first" / f"alert_{alert.alert_id}.xml", "rb"))
    assert vp.valid_as_v2_0(packet)
    assert vp.get_event_position(packet).ra == pytest.approx(alert.ra)
    params = vp.get_grouped_params(packet)["gammapy_cnn_alert"]
    assert float(params["flux_crab"]["value"]) == pytest.approx(alert.flux_crab, rel=1e-3)
    log = Table.read(writer.log_path)
    assert log.colnames == list(ALERT_LOG_COLUMNS) and len(log) == 1
    assert log["POS_ERR_68"].unit == u.deg and log["LATENCY"].unit == u.s

    again, _ = _monitor(crab_run, finder, tmp_path / "second")
    repeated = replay(crab_run, again)
    assert [(a.alert_id, a.ra, a.dec, a.significance, a.time) for a in repeated] == \
        [(a.alert_id, a.ra, a.dec, a.significance, a.time) for a in alerts]


@pytest.mark.slow
def test_a_known_source_does_not_alert_as_new(crab_run, finder, tmp_path):
    catalog = Table({"RA": [CRAB.ra.deg], "DEC": [CRAB.dec.deg], "NAME": ["Crab"]})
    monitor, _ = _monitor(crab_run, finder, tmp_path, catalog=catalog, timescales=[100 * u.s, 300 * u.s])
    assert replay(crab_run, monitor) == []
    known = [t for t in monitor.tracks if t.known]
    assert len(known) == 1 and known[0].known_name == "Crab"
    assert len(monitor.light_curves()) == len(known[0].light_curve)


def test_bad_input_is_named(crab_run, finder, tmp_path):
    monitor, _ = _monitor(crab_run, finder, tmp_path, timescales=[100 * u.s])
    with pytest.raises(ValueError, match="ENERGY"):
        monitor.feed(Table(crab_run.events.table)[["TIME", "RA", "DEC"]])
    events = crab_run.events.table
    late = events[np.argsort(events["TIME"])][-10:]
    monitor.feed(late)
    monitor.feed(events[np.argsort(events["TIME"])][:10])  # late: kept for the windows still open, logged
    assert monitor.late_events == 10
    with pytest.raises(ValueError, match="timescale"):
        Monitor(CRAB, crab_run.tstart, finder, timescales=[5 * u.deg])
    # DL3-style seconds need the reference time of the header; with it they are read
    seconds = Table({"TIME": [1.0, 2.0] * u.s, "RA": [83.6, 83.7] * u.deg, "DEC": [22.0, 22.1] * u.deg,
                     "ENERGY": [1.0, 2.0] * u.TeV})
    fresh, _ = _monitor(crab_run, finder, tmp_path / "fresh", timescales=[100 * u.s])
    with pytest.raises(ValueError, match="MJDREFI"):
        fresh.feed(seconds)
    reference = crab_run.tstart.tt
    seconds.meta.update(MJDREFI=int(reference.mjd), MJDREFF=reference.mjd % 1, TIMESYS="tt")
    fresh.feed(seconds)
    assert fresh._last == pytest.approx(2.0, abs=1e-3)
    with pytest.raises(ValueError, match="speed"):
        replay(crab_run, monitor, speed=0)


def test_excess_to_flux_follows_the_effective_area(crab_run):
    edges = [0.5, 1, 3, 10, 100] * u.TeV
    to_flux = ExcessToFlux(crab_run.aeff, edges, live_fraction=0.9)
    assert to_flux.energy_threshold == 0.5 * u.TeV
    crab_counts = sum(np.interp(0.5, np.linspace(0, 3, 31), rate) for rate in to_flux.crab_rate) * 100 * 0.9
    flux, crab = to_flux(crab_counts, 0.5 * u.deg, 100)
    assert crab == pytest.approx(1.0, rel=1e-6)
    assert flux == pytest.approx(CRAB_MODEL.integral(0.5 * u.TeV, 100 * u.TeV).to_value("cm-2 s-1"), rel=1e-3)
    # the same excess farther off-axis, where the area is smaller, is a brighter source
    assert to_flux(crab_counts, 2.0 * u.deg, 100)[1] > 1.2
    assert np.isnan(to_flux(crab_counts, 5 * u.deg, 100)[1])
    # measured shares: a softer source (its excess at low energies, where the area is small) is brighter
    soft = to_flux(crab_counts, 0.5 * u.deg, 100, shares=[0.7, 0.2, 0.08, 0.02])[1]
    hard = to_flux(crab_counts, 0.5 * u.deg, 100, shares=[0.2, 0.3, 0.3, 0.2])[1]
    assert soft > 1 > hard
    with pytest.raises(ValueError, match="shares"):
        to_flux(crab_counts, 0.5 * u.deg, 100, shares=[1.0])
    # the run's own: the monitor's maps start at its safe threshold (10% of the maximum area)
    monitor = Monitor.from_observation(crab_run, None)
    threshold = safe_energy_threshold(crab_run.aeff)
    assert 0.2 * u.TeV < threshold < 1 * u.TeV
    assert monitor.to_flux.energy_threshold.to_value("TeV") == pytest.approx(threshold.to_value("TeV"))
    assert monitor.geom.axes["energy"].edges[0].to_value("TeV") == pytest.approx(threshold.to_value("TeV"))
    assert 0.5 < monitor.to_flux.live_fraction < 1
    with pytest.raises(ValueError, match="energy_edges"):
        ExcessToFlux(crab_run.aeff, [1, 0.5] * u.TeV)
    with pytest.raises(ValueError, match="live_fraction"):
        ExcessToFlux(crab_run.aeff, edges, live_fraction=0)


def test_new_files_hands_out_each_finished_file_once(tmp_path):
    (tmp_path / "a.fits").write_bytes(b"x" * 10)
    looks = []

    def sleep(_):  # one look per poll; files arrive between looks
        looks.append(len(looks))
        if len(looks) == 2:
            (tmp_path / "b.fits.gz").write_bytes(b"y" * 5)
            (tmp_path / "notes.txt").write_text("not DL3")
        if len(looks) == 3:
            with open(tmp_path / "b.fits.gz", "ab") as growing:  # still being copied in
                growing.write(b"y")
        if len(looks) == 7:  # a file handed out is completed later: handed out again
            with open(tmp_path / "a.fits", "ab") as completed:
                completed.write(b"x")

    got = [p.name for p in new_files(tmp_path, poll=1.0, idle_exit=2.0, sleep=sleep)]
    assert got == ["a.fits", "b.fits.gz", "a.fits"]
    with pytest.raises(ValueError, match="existing folder"):
        next(new_files(tmp_path / "missing"))


@pytest.mark.slow
def test_follow_a_folder_from_the_command_line(tmp_path):
    """``gammapy-cnn monitor --follow DIR``: the run moved into the folder alerts; a bad file is skipped."""
    import shutil

    from click.testing import CliRunner

    from gammapy_cnn.cli import cli

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    run_file = require(HESS_DR1) / "data" / f"hess_dl3_dr1_obs_id_0{CRAB_RUN}.fits.gz"
    shutil.copy(run_file, inbox / run_file.name)
    (inbox / "broken.fits").write_bytes(b"not a FITS file")
    out = tmp_path / "alerts"
    result = CliRunner().invoke(cli, ["monitor", "--follow", str(inbox), "--idle-exit", "0.5", "--poll", "0.2",
                                      "--alerts", str(out), "--timescales", "300s,cumulative"])
    assert result.exit_code == 0, result.output
    assert "skipped broken.fits" in result.output
    log = Table.read(out / "alerts.ecsv")
    assert len(log) == 1 and log["ALERT_ID"][0] == f"{CRAB_RUN}-1"
    assert SkyCoord(log["RA"][0], log["DEC"][0], unit="deg").separation(CRAB).deg < 0.15
    assert np.isfinite(log["FLUX_CRAB"][0])
    both = CliRunner().invoke(cli, ["monitor", str(inbox), "--follow", str(inbox), "--alerts", str(out)])
    assert both.exit_code != 0 and "not both" in both.output


def test_a_simulated_burst_alerts_within_seconds_of_its_onset(template, finder, tmp_path):
    """Events with arrival times from gammapy's MapDatasetEventSampler: nothing before the
    onset, one alert at the burst in the first window after it, none elsewhere."""
    from gammapy_cnn.simulation import light_curve_source, simulate_observation

    pointing = SkyCoord(83.6, 22.0, unit="deg")
    burst = pointing.directional_offset_by(30 * u.deg, 1.0 * u.deg)
    onset = 100.0
    times = np.concatenate([[0, onset - 0.01], onset + np.geomspace(1, 200, 30)]) * u.s
    norms = np.where(times.value < onset, 0.0, (np.maximum(times.value - onset, 1) / 100) ** -1.2)
    source = light_curve_source(burst, 1.0, times, norms, name="burst")
    run = simulate_observation(template, pointing, 300 * u.s, [source], seed=7)
    seconds = (run.events.time - run.tstart).to_value("s")
    assert seconds.min() >= 0 and seconds.max() <= 300
    near = run.events.radec.separation(burst).deg < 0.1
    # before the onset only background (~5 events in 100 s there), then the burst
    assert np.sum(near & (seconds < onset)) < 20 and np.sum(near & (seconds > onset)) > 100

    monitor, _ = _monitor(run, finder, tmp_path, timescales=[10 * u.s, 30 * u.s])
    alerts = replay(run, monitor)
    assert [a.kind for a in alerts] == ["new"]
    (alert,) = alerts
    assert SkyCoord(alert.ra, alert.dec, unit="deg").separation(burst).deg < 0.05
    assert 0 < (alert.time - run.tstart.tt.mjd) * 86400 - onset <= 10 + 1e-3
    assert np.isfinite(alert.flux_crab) and alert.flux_crab > 1


def test_windows_in_gti_gaps_are_skipped_and_fluxes_use_good_time(finder, caplog):
    from astropy.time import Time
    from gammapy.data import GTI

    tstart = Time("2026-01-01T00:00:00", scale="tt")
    gti = GTI.create([0, 40] * u.s, [20, 60] * u.s, reference_time=tstart)
    monitor = Monitor(CRAB, tstart, finder, timescales=[10 * u.s, None], gti=gti)
    rng = np.random.default_rng(1)
    times = np.sort(np.concatenate([rng.uniform(0, 20, 50), rng.uniform(40, 60, 50)]))
    events = Table({"TIME": times * u.s, "RA": rng.normal(83.6, 1, 100) * u.deg,
                    "DEC": rng.normal(22.0, 1, 100) * u.deg, "ENERGY": np.full(100, 1.0) * u.TeV})
    events.meta.update(MJDREFI=int(tstart.mjd), MJDREFF=tstart.mjd % 1, TIMESYS="tt")
    monitor.feed(events[:60], until=tstart + 30 * u.s)
    monitor.feed(Table(events[:0]), until=tstart + 35 * u.s)  # an empty chunk: nothing closes
    monitor.feed(events[60:], until=tstart + 60 * u.s)
    starts = [round((w["t_start"] - tstart.tt.mjd) * 86400) for w in monitor.windows if w["timescale"] == 10]
    assert starts == [0, 10, 40, 50]  # [20, 30] and [30, 40] lie in the gap
    assert monitor._livetime(0, 60) == pytest.approx(40)
    with caplog.at_level("WARNING", logger="gammapy_cnn.realtime.monitor"):
        monitor.feed(events[:3])
    assert monitor.late_events == 3 and "out of time order" in caplog.text


def test_monitor_settings_from_a_yaml_file(tmp_path):
    from click.testing import CliRunner

    from gammapy_cnn.cli import cli
    from gammapy_cnn.realtime import MonitorConfig

    run_file = require(HESS_DR1) / "data" / f"hess_dl3_dr1_obs_id_0{CRAB_RUN}.fits.gz"
    config = tmp_path / "monitor.yaml"
    config.write_text(f"timescales: [300 s, cumulative]\nalerts: {tmp_path / 'out'}\nrole: test\n")
    result = CliRunner().invoke(cli, ["monitor", str(run_file), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert len(Table.read(tmp_path / "out" / "alerts.ecsv")) == 1
    # the command line overrides the file
    result = CliRunner().invoke(cli, ["monitor", str(run_file), "--config", str(config), "--timescales", "1000s",
                                      "--alerts", str(tmp_path / "other")])
    assert result.exit_code == 0, result.output
    light_curves = Table.read(tmp_path / "other" / f"light_curves_{CRAB_RUN}.ecsv")
    assert set(light_curves["timescale"]) <= {1000.0}
    config.write_text("timescales: [300 s]\nalert_rate: 1 / h\n")
    with pytest.raises(ValueError, match="alert_rate"):
        MonitorConfig.read(config)
    config.write_text("timescales: [5 deg]\n")
    with pytest.raises(ValueError, match="timescales"):
        MonitorConfig.read(config)


@pytest.mark.slow
def test_a_known_source_flaring_gives_one_flare_alert(template, finder, tmp_path):
    """A known 0.3 Crab source ten times brighter for 200 s: one "flare" alert, during the flare."""
    from gammapy_cnn.simulation import light_curve_source, simulate_observation

    pointing = SkyCoord(150.0, -10.0, unit="deg")
    agn = pointing.directional_offset_by(120 * u.deg, 0.8 * u.deg)
    start, stop = 500.0, 700.0
    times = np.array([0, start - 0.01, start, stop, stop + 0.01, 900]) * u.s
    source = light_curve_source(agn, 0.3, times, [1, 1, 10, 10, 1, 1], name="agn")
    run = simulate_observation(template, pointing, 900 * u.s, [source], seed=11)
    catalog = Table({"RA": [agn.ra.deg], "DEC": [agn.dec.deg], "NAME": ["AGN"]})
    monitor, _ = _monitor(run, finder, tmp_path, catalog=catalog, timescales=[30 * u.s, 100 * u.s, 300 * u.s])
    alerts = replay(run, monitor)
    assert [a.kind for a in alerts] == ["flare"]
    seconds = (alerts[0].time - run.tstart.tt.mjd) * 86400
    assert start < seconds <= stop + 100
    assert alerts[0].known_name == "AGN"


def test_the_false_alarm_card_describes_the_monitor_and_keeps_its_measurements(tmp_path):
    """The shipped card was measured at the threshold the monitor uses today, and holds both
    source-free data sets; updating a copy adds a record and recomputes the combined rate."""
    from gammapy_cnn.realtime import (
        DEFAULT_TIMESCALES,
        alert_significance,
        false_alarm_record,
        read_false_alarm_card,
        update_false_alarm_card,
    )

    card = read_false_alarm_card()
    monitor = Monitor(CRAB, Time("2026-01-01T00:00:00"), CNNSourceFinder(network="original"))
    assert card["threshold"]["significance"] == pytest.approx(monitor._alert_significance(), abs=1e-4)
    assert card["threshold"]["significance"] == pytest.approx(alert_significance(0.1 / u.h, DEFAULT_TIMESCALES),
                                                              abs=1e-4)
    measured = card["measured"]
    assert {"simulated_nights", "hess_dr1_source_free", "combined"} <= set(measured)
    for record in measured.values():
        assert record["hours"] > 0 and record["upper_limit_95_per_hour"] > record["rate_per_hour"]

    copy = tmp_path / "card.json"
    copy.write_text(json.dumps(card))
    added = update_false_alarm_card("more", false_alarm_record(2, 10.0), path=copy)
    combined = added["measured"]["combined"]
    assert combined["false_alerts"] == measured["combined"]["false_alerts"] + 2
    assert combined["hours"] == pytest.approx(measured["combined"]["hours"] + 10.0, abs=1e-2)
    # zero in 10 h bounds the rate to 0.30 per hour (95%): the Poisson limit, not a guess
    assert false_alarm_record(0, 10.0)["upper_limit_95_per_hour"] == pytest.approx(0.2996, abs=1e-3)
    with pytest.raises(ValueError, match="measured at 4.000 sigma"):
        update_false_alarm_card("other", false_alarm_record(0, 1.0, threshold=4.0), path=copy)
