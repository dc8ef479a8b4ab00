"""The monitor's false-alarm card: how its alert threshold is set and what it gave on source-free data.

The alert threshold is analytic (`alert_significance`: a Gaussian tail times
the trials of an hour). Whether the monitor's chance alerts really come that
rarely is measured on source-free data: simulated nights
(``benchmarks/monitor_transients.py``) and the source-free H.E.S.S. runs
(``benchmarks/monitor_hess.py``). Each benchmark, run with ``--update-card``,
records its count in ``false_alarm_card.json`` beside this module, with the
threshold it was measured at; `read_false_alarm_card` reads it.
"""

import json
from datetime import date
from importlib import resources
from pathlib import Path

from scipy.stats import chi2

from ..finders import POSITIONS_PER_FIELD
from ..utils import write_text_atomic
from .monitor import CUMULATIVE_EVERY, DEFAULT_ALERT_FALSE_RATE, DEFAULT_TIMESCALES, alert_significance

__all__ = ["false_alarm_record", "read_false_alarm_card", "update_false_alarm_card"]


def card_path():
    """Path of the shipped card."""
    return Path(str(resources.files("gammapy_cnn.realtime") / "false_alarm_card.json"))


def read_false_alarm_card(path=None):
    """The card as a dict: ``threshold`` (the rule and its value) and ``measured`` (per data set)."""
    path = Path(path) if path is not None else card_path()
    if not path.is_file():
        raise FileNotFoundError(f"no false-alarm card at {path}")
    return json.loads(path.read_text())


def false_alarm_record(false_alerts, hours, **info):
    """One measurement: ``false_alerts`` in ``hours`` of source-free data, its rate per hour and
    the rate's one-sided 95% upper limit (Poisson); ``info`` (command, data...) is stored with it."""
    if hours <= 0:
        raise ValueError(f"hours must be positive, got {hours}")
    upper = 0.5 * chi2.ppf(0.95, 2 * (int(false_alerts) + 1)) / hours
    return dict(false_alerts=int(false_alerts), hours=round(float(hours), 3),
                rate_per_hour=float(false_alerts) / hours, upper_limit_95_per_hour=round(float(upper), 4), **info)


def update_false_alarm_card(name, record, path=None):
    """Store (atomically) a `false_alarm_record` under ``name``; the ``combined`` entry sums them all.

    The record must have been measured at the default threshold (its
    ``threshold`` key): a card mixing thresholds would not describe the monitor.
    """
    path = Path(path) if path is not None else card_path()
    threshold = dict(
        rule="one-sided Gaussian tail x positions per field x windows per hour = alert_false_rate",
        alert_false_rate_per_hour=DEFAULT_ALERT_FALSE_RATE.to_value("1/h"),
        positions_per_field=POSITIONS_PER_FIELD,
        timescales_s=[None if t is None else t.to_value("s") for t in DEFAULT_TIMESCALES],
        cumulative_every_s=CUMULATIVE_EVERY,
        significance=round(alert_significance(), 4),
    )
    if abs(record.get("threshold", threshold["significance"]) - threshold["significance"]) > 1e-3:
        raise ValueError(f"{name} was measured at {record['threshold']:.3f} sigma, not at the default "
                         f"{threshold['significance']:.3f}")
    card = read_false_alarm_card(path) if path.is_file() else {}
    measured = {k: v for k, v in card.get("measured", {}).items() if k != "combined"}
    measured[name] = dict(record, date=date.today().isoformat())
    false, hours = sum(m["false_alerts"] for m in measured.values()), sum(m["hours"] for m in measured.values())
    measured["combined"] = false_alarm_record(false, hours, sets=sorted(measured))
    card = dict(threshold=threshold, measured=measured)
    write_text_atomic(path, json.dumps(card, indent=1) + "\n")
    return card
