"""`MonitorConfig`: the real-time monitor's settings in one YAML file (``gammapy-cnn monitor --config``).

A night's monitor is one process with one file of settings. Example::

    timescales: [10 s, 30 s, 100 s, 300 s, 1000 s, cumulative]
    alert_false_rate: 0.1 / h
    association_radius: 0.2 deg
    catalog: known_sources.ecsv
    alerts: alerts/
    role: observation

Every key is optional (the defaults are `Monitor`'s); an unknown key or a
value of the wrong kind is an error naming it. Options given on the command
line override the file.
"""

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..utils import to_quantity

__all__ = ["MonitorConfig"]

#: Units of the settings that are quantities (written as strings, e.g. "0.2 deg").
_UNITS = {"alert_false_rate": "1 / h", "association_radius": "deg", "offset_max": "deg", "chunk": "s"}


class MonitorConfig(BaseModel):
    """Settings of ``gammapy-cnn monitor``; quantities are strings with units (``"0.2 deg"``)."""

    model_config = ConfigDict(extra="forbid")

    timescales: list[str] = ["10 s", "30 s", "100 s", "300 s", "1000 s", "cumulative"]
    alert_false_rate: str = "0.1 / h"
    association_radius: str = "0.2 deg"
    flare_factor: float = Field(2.0, gt=1)
    offset_max: str = "2.5 deg"
    catalog: str | None = None
    alerts: str | None = None
    finder: str = "default"
    background_network: str = "default"
    role: str = "test"
    chunk: str = "1 s"
    replay_speed: float | None = Field(None, gt=0)
    poll: float = Field(1.0, gt=0)
    idle_exit: float | None = Field(None, ge=0)

    @field_validator("timescales")
    @classmethod
    def _timescales(cls, value):
        if not value:
            raise ValueError("at least one timescale is needed")
        for text in value:
            if text.strip() != "cumulative":
                to_quantity(text, "s", "timescales", positive=True)
        return value

    @field_validator(*_UNITS)
    @classmethod
    def _quantity(cls, value, info):
        to_quantity(value, _UNITS[info.field_name], info.field_name, positive=True)
        return value

    @field_validator("role")
    @classmethod
    def _role(cls, value):
        if value not in ("test", "observation"):
            raise ValueError(f"role is 'test' or 'observation', got {value!r}")
        return value

    @classmethod
    def read(cls, path):
        """Read a YAML file; errors name the file and the field."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ValueError(f"cannot read the monitor config {path}: {error}") from None
        if not isinstance(data, dict):
            raise ValueError(f"the monitor config {path} must be a mapping of settings")
        try:
            return cls(**data)
        except ValidationError as error:
            raise ValueError(f"monitor config {path}: {error}") from None

    def timescale_quantities(self):
        """The timescales as `Monitor` takes them (None: cumulative)."""
        return [None if text.strip() == "cumulative" else to_quantity(text, "s", "timescales")
                for text in self.timescales]

    def monitor_kwargs(self):
        """Keyword arguments of `Monitor` (all but the finder, catalogue and writer)."""
        return dict(timescales=self.timescale_quantities(),
                    alert_false_rate=to_quantity(self.alert_false_rate, "1 / h", "alert_false_rate"),
                    association_radius=to_quantity(self.association_radius, "deg", "association_radius"),
                    flare_factor=self.flare_factor,
                    offset_max=to_quantity(self.offset_max, "deg", "offset_max"))
