"""Travel times from a call's origin to the stations, for routing to choose among
(dispatcher/calls/routing.py): a crow-flies estimate that needs nothing, and an OSRM
server's road times that fall back to the estimate on any error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from carecall.core.geo import great_circle_km
from dispatcher.calls.routing import AreaKind, RoutingConfig, StationNode, travel_minutes

if TYPE_CHECKING:
    import httpx

__all__ = ["DistanceEngine", "OsrmEngine", "TravelEngine", "make_engine"]


class TravelEngine(Protocol):
    async def minutes(
        self, origin: tuple[float, float], targets: Sequence[StationNode], area: AreaKind
    ) -> dict[str, float]: ...


class DistanceEngine:
    """Crow-flies estimate: always available, no network, the fallback for OSRM."""

    def __init__(self, cfg: RoutingConfig) -> None:
        self.cfg = cfg

    async def minutes(
        self, origin: tuple[float, float], targets: Sequence[StationNode], area: AreaKind
    ) -> dict[str, float]:
        lat, lon = origin
        return {t.id: travel_minutes(self.cfg, great_circle_km(lat, lon, t.lat, t.lon), area) for t in targets}


class OsrmEngine:
    """Road times from an OSRM server's table service; on any error the straight-line
    estimate answers instead (a call must be routed even when the map server is down),
    and ``failures`` counts how often that happened so it can be exported as a metric.

    Targets the road network cannot reach (null durations) also get the estimate: a
    snapping failure in OSRM is far more common than a truly unreachable station.
    Targets go in batches because OSRM refuses tables above ``--max-table-size``
    (100 locations by default) and a county can have more stations than that.
    """

    def __init__(
        self,
        base_url: str,
        cfg: RoutingConfig,
        client: httpx.AsyncClient | None = None,
        max_table: int = 100,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.fallback = DistanceEngine(cfg)
        self.timeout_s = cfg.osrm_timeout_s
        self.batch = max(1, max_table - 1)  # one slot is the origin
        self._client = client
        self.failures = 0

    async def minutes(
        self, origin: tuple[float, float], targets: Sequence[StationNode], area: AreaKind
    ) -> dict[str, float]:
        estimate = await self.fallback.minutes(origin, targets, area)
        result: dict[str, float] = {}
        for i in range(0, len(targets), self.batch):
            chunk = targets[i : i + self.batch]
            try:
                seconds = await self._table(origin, chunk)
            except Exception:  # any failure: route by estimate rather than not at all
                self.failures += 1
                seconds = [None] * len(chunk)
            for t, sec in zip(chunk, seconds, strict=True):
                result[t.id] = sec / 60.0 if sec is not None else estimate[t.id]
        return result

    async def _table(self, origin: tuple[float, float], targets: Sequence[StationNode]) -> list[float | None]:
        import httpx  # only deployments that configure OSRM need it

        points = [origin, *((t.lat, t.lon) for t in targets)]
        coords = ";".join(f"{lon:.6f},{lat:.6f}" for lat, lon in points)  # OSRM wants lon,lat
        url = f"{self.base_url}/table/v1/driving/{coords}"
        params = {"sources": "0", "annotations": "duration"}
        if self._client is not None:
            resp = await self._client.get(url, params=params, timeout=self.timeout_s)
        else:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                resp = await client.get(url, params=params)
        resp.raise_for_status()
        body = resp.json()
        if body.get("code") != "Ok":
            raise ValueError(f"OSRM answered code {body.get('code')!r}")
        row = body["durations"][0][1:]
        if len(row) != len(targets):
            raise ValueError("OSRM table has the wrong number of columns")
        return [float(s) if s is not None else None for s in row]


def make_engine(cfg: RoutingConfig) -> TravelEngine:
    if cfg.engine == "osrm" and cfg.osrm_url:
        return OsrmEngine(cfg.osrm_url, cfg)
    return DistanceEngine(cfg)
