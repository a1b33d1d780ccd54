"""The one great-circle distance."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carecall.core.geo import EARTH_RADIUS_KM, great_circle_km

lat = st.floats(min_value=-90, max_value=90, allow_nan=False)
lon = st.floats(min_value=-180, max_value=180, allow_nan=False)


def test_known_distances() -> None:
    assert great_circle_km(32.0, 112.0, 32.0, 112.0) == 0.0
    # one degree of latitude is 1/360 of a meridian circle
    assert great_circle_km(32.0, 112.0, 33.0, 112.0) == pytest.approx(2 * math.pi * EARTH_RADIUS_KM / 360)
    # one degree of longitude shrinks with the cosine of the latitude (to first order)
    assert great_circle_km(60.0, 10.0, 60.0, 11.0) == pytest.approx(111.19 * 0.5, rel=1e-3)
    assert great_circle_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(math.pi * EARTH_RADIUS_KM)


@given(lat, lon, lat, lon)
def test_symmetric_and_bounded(lat1: float, lon1: float, lat2: float, lon2: float) -> None:
    d = great_circle_km(lat1, lon1, lat2, lon2)
    assert d == pytest.approx(great_circle_km(lat2, lon2, lat1, lon1), abs=1e-9)
    assert 0.0 <= d <= math.pi * EARTH_RADIUS_KM + 1e-9
