"""The settings of config/dispatch.yaml as models (pure; dispatcher/calls/config_files.py
reads the file): routing, priority, calls, and mass offline incidents."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from dispatcher.calls.priority import CallsConfig, PriorityConfig
from dispatcher.calls.routing import RoutingConfig

__all__ = ["MASS_OFFLINE", "DispatchConfig", "DispatchConfigError", "MassOfflineConfig"]

# the call class of a mass offline incident (dispatcher/incidents/service.py)
MASS_OFFLINE = "mass_offline"


class MassOfflineConfig(BaseModel):
    """config/dispatch.yaml, key ``mass_offline``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    # Offline events this many seconds apart or closer count as one cluster; an open
    # incident takes further offline events of its area while they keep coming this close.
    window_s: float = Field(default=60.0, gt=0, le=3600)
    # Distinct devices offline within one window in one area that make it an incident.
    min_devices: int = Field(default=20, ge=2)
    # The area climbs up the tree while it holds less than this share of the cluster of
    # the whole tree above it (two streets dark at once: one county incident).
    area_share: float = Field(default=0.8, gt=0, le=1)
    # An offline event received this close to a broker outage a gateway observed (from
    # lost - margin to back + margin; an outage not yet over has no end) is explained
    # by it.
    outage_margin_s: float = Field(default=60.0, ge=0, le=3600)
    # Offline events explained by one outage that make it a "broker restart" incident.
    outage_min_devices: int = Field(default=1, ge=1)
    # An outage no gateway saw end (the copy died, or was scaled away, while cut off)
    # explains offline events for at most this long after it began.
    outage_open_max_s: float = Field(default=3600.0, gt=0)


class DispatchConfig(BaseModel):
    """The whole of config/dispatch.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    routing: RoutingConfig = RoutingConfig()
    priority: PriorityConfig = PriorityConfig()
    calls: CallsConfig = CallsConfig()
    # many devices offline at once: one incident for the area (dispatcher.incidents.mass_offline)
    mass_offline: MassOfflineConfig = MassOfflineConfig()


class DispatchConfigError(ValueError):
    """config/dispatch.yaml cannot be used; the message names the file and the bad key."""
