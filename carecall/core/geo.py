"""Distance on the Earth's surface: the one great-circle formula CareCall uses (routing's
straight-line estimate, coverage circles, the demo county's layout and its tests)."""

from __future__ import annotations

import math

__all__ = ["EARTH_RADIUS_KM", "great_circle_km"]

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance in km between two points given in degrees; a county is small
    enough that the sphere is exact enough."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    # min(): rounding can push a just past 1 for antipodal points, outside asin's domain
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))
