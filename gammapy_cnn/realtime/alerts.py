"""Alert packets: VOEvent 2.0 files and the ``alerts.ecsv`` log, written atomically."""

import datetime
from pathlib import Path

import numpy as np
import voeventparse as vp
from astropy.table import Table
from astropy.time import Time

from ..utils import atomic_path

__all__ = ["ALERT_LOG_COLUMNS", "AlertWriter", "alert_voevent"]

#: Columns of ``alerts.ecsv`` (the `~gammapy_cnn.realtime.Alert` fields, upper case) and their units.
ALERT_LOG_COLUMNS = {
    "ALERT_ID": "", "TRACK_ID": "", "KIND": "", "RA": "deg", "DEC": "deg", "POS_ERR_68": "deg",
    "TIMESCALE": "s", "SIGNIFICANCE": "", "EXCESS": "", "FLUX": "cm-2 s-1", "FLUX_CRAB": "",
    "FALSE_ALARM_RATE": "1 / h", "TIME": "d",
    "LATENCY": "s", "KNOWN_NAME": "",
}
STREAM = "gammapy-cnn.invalid/monitor"


def alert_voevent(alert, role="test"):
    """The VOEvent 2.0 packet of an `~gammapy_cnn.realtime.monitor.Alert` (schema-checked).

    ``role`` is VOEvent's (``"observation"`` for real alerts, ``"test"`` for
    replays and simulations).
    """
    event = vp.Voevent(stream=STREAM, stream_id=alert.alert_id, role=role)
    vp.set_who(event, date=datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0),
               author_ivorn=STREAM)
    vp.set_author(event, title="gammapy-cnn real-time monitor", shortName="gammapy-cnn")
    obs_time = Time(alert.time, format="mjd", scale="tt").utc.to_datetime().replace(microsecond=0)
    vp.add_where_when(
        event,
        coords=vp.Position2D(ra=alert.ra, dec=alert.dec, err=alert.pos_err_68, units="deg",
                             system=vp.definitions.sky_coord_system.utc_fk5_geo),
        obs_time=obs_time.replace(tzinfo=datetime.timezone.utc),
        observatory_location=vp.definitions.observatory_location.geosurface,
    )
    timescale = "cumulative" if not np.isfinite(alert.timescale) else f"{alert.timescale:g}"
    params = [
        vp.Param("kind", value=alert.kind, dataType="string", ucd="meta.code"),
        vp.Param("track_id", value=str(alert.track_id), dataType="int", ucd="meta.id"),
        vp.Param("timescale", value=timescale, dataType="string", unit="s", ucd="time.duration"),
        vp.Param("significance", value=f"{alert.significance:.3f}", dataType="float", ucd="stat.snr"),
        vp.Param("excess", value=f"{alert.excess:.2f}", dataType="float", unit="ct", ucd="phot.count"),
        vp.Param("false_alarm_rate", value=f"{alert.false_alarm_rate:.3e}", dataType="float", unit="1/h",
                 ucd="stat.probability"),
        vp.Param("pos_err_68", value=f"{alert.pos_err_68:.5f}", dataType="float", unit="deg",
                 ucd="pos.angResolution"),
        vp.Param("known_source", value=alert.known_name, dataType="string", ucd="meta.id.cross"),
    ]
    if np.isfinite(alert.flux):  # without an effective area the packet holds counts only
        params += [
            vp.Param("flux", value=f"{alert.flux:.4e}", dataType="float", unit="cm-2 s-1",
                     ucd="phot.flux;em.energy"),
            vp.Param("flux_crab", value=f"{alert.flux_crab:.4f}", dataType="float", ucd="phot.flux;arith.ratio"),
        ]
    event.What.append(vp.Group(params, name="gammapy_cnn_alert"))
    vp.add_how(event, descriptions="CNNSourceFinder on counts maps of back-to-back time windows")
    vp.assert_valid_as_v2_0(event)
    return event


class AlertWriter:
    """Writes each alert into ``directory``: ``{ALERT_ID}.xml`` (VOEvent) and a row of ``alerts.ecsv``.

    Both are written atomically (a reader never sees half a file); the log is
    rewritten whole with every alert, so it always holds all of them.
    """

    def __init__(self, directory, role="test"):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.role = role
        self.rows = []

    @property
    def log_path(self):
        return self.directory / "alerts.ecsv"

    def __call__(self, alert):
        path = self.directory / f"alert_{alert.alert_id}.xml"
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(vp.dumps(alert_voevent(alert, self.role)))
        self.rows.append({name: getattr(alert, name.lower()) for name in ALERT_LOG_COLUMNS})
        table = Table(rows=self.rows, names=list(ALERT_LOG_COLUMNS))
        for name, unit in ALERT_LOG_COLUMNS.items():
            if unit:
                table[name].unit = unit
        table.meta["comments"] = ["TIME: end of the triggering data (MJD TT); LATENCY: wall clock from "
                                  "having that data to writing the alert; FLUX: integral flux above the "
                                  "maps' energy threshold for a Crab-like spectrum (NaN: no effective "
                                  "area, counts only)"]
        with atomic_path(self.log_path) as tmp:
            table.write(tmp, format="ascii.ecsv", overwrite=True)
        return path
