"""TimeZoneName: one check for every model that holds a time zone."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from config.settings import SettingsError, load_settings
from config.types import TimeZoneName, check_timezone_name
from dispatcher.registry.schemas import StationRow
from simulators.scenario import Scenario


class _Holder(BaseModel):
    tz: TimeZoneName


def test_known_zone_passes_unknown_is_refused() -> None:
    assert _Holder(tz="Asia/Shanghai").tz == "Asia/Shanghai"
    assert check_timezone_name("UTC") == "UTC"
    for bad in ("Mars/Olympus", "", "../etc/passwd"):
        with pytest.raises(ValidationError, match="unknown time zone"):
            _Holder(tz=bad)


def test_every_holder_uses_it() -> None:
    """Settings, registry station rows and scenarios refuse the same names the same way."""
    with pytest.raises(SettingsError, match="CARECALL_TIMEZONE: unknown time zone 'Mars/Olympus'"):
        load_settings(database_url="sqlite:///unused.db", timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        Scenario(timezone="Mars/Olympus")
    for model in (StationRow, Scenario):
        assert model.model_fields["timezone"].metadata == _Holder.model_fields["tz"].metadata
