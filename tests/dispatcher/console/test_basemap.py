"""The demo county's generated basemap: deterministic, complete over the county, readable."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image
from pmtiles.reader import MmapSource, Reader
from pmtiles.tile import TileType

from dispatcher.console.basemap import (
    Fonts,
    _world,
    build_basemap,
    main,
    pinyin,
    plan_county,
    render_tile,
)
from dispatcher.console.tiles import DEMO_BASEMAP
from dispatcher.registry.demo_county import DEMO_SEED, generate_demo_county

# small zooms keep the builds quick; the shipped archive is checked to 16 below
ZOOMS = (10, 12)


@pytest.fixture(scope="module")
def county_points() -> list[tuple[float, float]]:
    c = generate_demo_county(DEMO_SEED)
    return [(h.lat, h.lon) for h in c.homes] + [(s.lat, s.lon) for s in c.stations]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("basemap")
    a, b = d / "a.pmtiles", d / "b.pmtiles"
    build_basemap(a, min_zoom=ZOOMS[0], max_zoom=ZOOMS[1])
    build_basemap(b, min_zoom=ZOOMS[0], max_zoom=ZOOMS[1])
    return a, b


def tile_at(reader: Reader, lat: float, lon: float, z: int) -> bytes | None:
    x, y = _world(lat, lon, z)
    data: bytes | None = reader.get(z, int(x // 256), int(y // 256))  # type: ignore[no-untyped-call]
    return data


def header_of(path: Path) -> dict[str, object]:
    with path.open("rb") as f:
        h: dict[str, object] = dict(Reader(MmapSource(f)).header())  # type: ignore[no-untyped-call]
    return h


def test_same_seed_same_bytes(built: tuple[Path, Path]) -> None:
    a, b = built
    assert a.read_bytes() == b.read_bytes()


def test_another_seed_another_map(built: tuple[Path, Path], tmp_path: Path) -> None:
    other = tmp_path / "other.pmtiles"
    build_basemap(other, seed=DEMO_SEED + 1, min_zoom=ZOOMS[0], max_zoom=ZOOMS[0])
    same_zoom = tmp_path / "same.pmtiles"
    build_basemap(same_zoom, min_zoom=ZOOMS[0], max_zoom=ZOOMS[0])
    assert other.read_bytes() != same_zoom.read_bytes()


def test_header_zooms_type_and_bbox(
    built: tuple[Path, Path], county_points: list[tuple[float, float]]
) -> None:
    h = header_of(built[0])
    assert (h["min_zoom"], h["max_zoom"]) == ZOOMS
    assert h["tile_type"] == TileType.PNG
    assert h["clustered"] is True
    for lat, lon in county_points:
        assert h["min_lat_e7"] <= lat * 1e7 <= h["max_lat_e7"]  # type: ignore[operator]
        assert h["min_lon_e7"] <= lon * 1e7 <= h["max_lon_e7"]  # type: ignore[operator]


def test_every_home_and_station_has_a_png_tile_at_every_zoom(
    built: tuple[Path, Path], county_points: list[tuple[float, float]]
) -> None:
    with built[0].open("rb") as f:
        reader = Reader(MmapSource(f))  # type: ignore[no-untyped-call]
        for z in range(ZOOMS[0], ZOOMS[1] + 1):
            for lat, lon in county_points:
                data = tile_at(reader, lat, lon, z)
                assert data is not None, (z, lat, lon)
                assert data.startswith(b"\x89PNG")
        assert reader.get(ZOOMS[1] + 1, 0, 0) is None  # type: ignore[no-untyped-call]


def test_shipped_demo_archive(county_points: list[tuple[float, float]]) -> None:
    """The archive in the package: small, zoom 10-16, streets drawn under every home."""
    assert DEMO_BASEMAP.is_file(), "run: python -m dispatcher.console.basemap"
    assert DEMO_BASEMAP.stat().st_size < 2 * 1024 * 1024
    h = header_of(DEMO_BASEMAP)
    assert (h["min_zoom"], h["max_zoom"]) == (10, 16)
    with DEMO_BASEMAP.open("rb") as f:
        reader = Reader(MmapSource(f))  # type: ignore[no-untyped-call]
        for lat, lon in county_points:
            assert h["min_lat_e7"] <= lat * 1e7 <= h["max_lat_e7"]  # type: ignore[operator]
            assert h["min_lon_e7"] <= lon * 1e7 <= h["max_lon_e7"]  # type: ignore[operator]
            data = tile_at(reader, lat, lon, 16)
            assert data is not None
            # a street (white or the highway's colour) somewhere on the home's tile
            img = Image.open(io.BytesIO(data)).convert("RGB")
            colours = {c for _, c in img.getcolors(maxcolors=256 * 256) or []}
            assert colours & {(255, 255, 255), (250, 246, 238), (255, 250, 240), (252, 214, 140)}, (lat, lon)


def test_every_road_or_village_in_an_address_is_on_the_map() -> None:
    county = generate_demo_county(DEMO_SEED)
    plan = plan_county(county)
    roads = {r.name for r in plan.roads if r.name}
    villages = {p.name for p in plan.places if p.name.endswith("村")}
    assert villages
    for home in county.homes:
        m = re.match(r"^唐河县.+?(?:街道|镇)(?P<road>[^\d]+?(?:大道|大街|路|街))\d", home.address)
        if m:
            assert m["road"] in roads, home.address
        else:
            assert any(v in home.address for v in villages), home.address


def test_labels_are_drawn() -> None:
    """A zoom-16 tile over an arterial's label has dark text pixels; the plain field has none."""
    county = generate_demo_county(DEMO_SEED)
    plan = plan_county(county)
    label = next(lb for lb in plan.labels if lb.kind == "arterial")
    x, y = _world(*label.at, 16)
    img = render_tile(plan, 16, int(x // 256), int(y // 256), Fonts(None))
    assert img.convert("L").getextrema()[0] < 100
    far = render_tile(plan, 16, 0, 0, Fonts(None))
    assert far.getcolors() is not None and len(far.getcolors() or []) == 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("人民路", "Renmin Lu"),
        ("友兰大道", "Youlan Dadao"),
        ("东大街", "Dong Dajie"),
        ("唐河县", "Tanghe Xian"),
        ("滨河街道", "Binhe Jiedao"),
        ("桐寨铺镇", "Tongzhaipu Zhen"),
        ("前营村", "Qianying Cun"),
        ("唐桐公路", "Tangtong Gonglu"),
        ("龘路", None),
    ],
)
def test_pinyin(name: str, expected: str | None) -> None:
    assert pinyin(name) == expected


def test_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmd.pmtiles"
    assert main(["--out", str(out), "--min-zoom", "10", "--max-zoom", "10"]) == 0
    assert out.is_file()
    assert "zoom 10-10" in capsys.readouterr().out
    assert main(["--out", str(out), "--min-zoom", "12", "--max-zoom", "11"]) == 2
    assert "zooms must satisfy" in capsys.readouterr().err
