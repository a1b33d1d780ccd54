"""A small street map of the demo county, generated, as a PMTiles archive of PNG tiles.

The console's map needs streets under the homes and stations to be readable, and it may
not fetch anything from the internet. A real deployment points ``basemap_file`` at an
extract of its own county (any raster PMTiles archive); the demo county is invented, so
its map is invented too: this module lays out a plausible town around the demo's homes
and stations (a gridded county seat with named arterials, market towns with their own
streets, villages joined by country roads, a river) and draws it with Pillow.

Everything comes from the demo county's seed and one ``random.Random``: the same seed and
the same Pillow and font give the same bytes, so a rebuilt archive only changes when the
county does.

Street names come from the demo's own addresses (``唐河县滨河街道红庙路295号`` gives
红庙路 in 滨河街道), so the road an address names is on the map near that home. Labels are
Chinese with pinyin when a CJK font is found (or given with ``--font``), else pinyin only
(Pillow's bundled font has no Chinese).
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from PIL import Image, ImageDraw, ImageFont

from dispatcher.console.basemap_plan import LatLon, MapPlan, pinyin, plan_county
from dispatcher.console.tiles import DEMO_BASEMAP
from dispatcher.registry.demo_county import DEMO_SEED, SEAT_LAT, SEAT_LON, generate_demo_county

__all__ = [
    "DEFAULT_MAX_ZOOM",
    "DEFAULT_MIN_ZOOM",
    "DEMO_BASEMAP",
    "BuildResult",
    "MapPlan",
    "build_basemap",
    "main",
    "pinyin",
    "plan_county",
    "render_tile",
]

DEFAULT_MIN_ZOOM = 10
DEFAULT_MAX_ZOOM = 16
TILE = 256

# CJK fonts that Debian packages install (fonts-wqy-microhei, fonts-noto-cjk, …)
CJK_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
)

# --- drawing ----------------------------------------------------------------------------

_BG = (236, 234, 222)
_COLORS = {
    "town": (228, 226, 222),
    "block": (216, 212, 206),
    "park": (200, 226, 186),
    "village": (222, 216, 200),
    "water": (166, 200, 232),
    "casing": (170, 160, 150),
    "highway": (252, 214, 140),
    "arterial": (255, 255, 255),
    "street": (255, 255, 255),
    "country": (255, 250, 240),
    "lane": (250, 246, 238),
    "text": (60, 56, 52),
    "place": (40, 36, 60),
}
# width in pixels at zoom 16 (halved per zoom level out) and the first zoom drawn
_ROAD_STYLE = {
    "highway": (14.0, 10),
    "arterial": (12.0, 12),
    "country": (7.0, 12),
    "street": (6.0, 14),
    "lane": (4.0, 14),
}
_LABEL_ZOOM = {"highway": 12, "arterial": 14}
# the zooms at which a place's name shows, by rank
_PLACE_ZOOM = {0: (10, 18), 1: (11, 14), 2: (13, 18), 3: (13, 14)}
_PLACE_SIZE = {0: 16, 1: 14, 2: 12, 3: 13}


def _world(lat: float, lon: float, z: int) -> tuple[float, float]:
    scale = TILE * 2**z
    s = math.sin(math.radians(max(-85.0, min(85.0, lat))))
    return (lon + 180) / 360 * scale, (0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)) * scale


def tile_range(bbox: tuple[float, float, float, float], z: int) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 (inclusive) of the tiles covering ``bbox`` at zoom ``z``."""
    min_lon, min_lat, max_lon, max_lat = bbox
    x0, y0 = _world(max_lat, min_lon, z)
    x1, y1 = _world(min_lat, max_lon, z)
    return int(x0 // TILE), int(y0 // TILE), int(x1 // TILE), int(y1 // TILE)


@dataclass(frozen=True)
class Fonts:
    path: str | None  # None: Pillow's bundled font (Latin only)

    @property
    def cjk(self) -> bool:
        return self.path is not None

    def get(self, size: int) -> ImageFont.FreeTypeFont:
        return _font(self.path, size)


@cache
def _font(path: str | None, size: int) -> ImageFont.FreeTypeFont:
    if path is None:
        font = ImageFont.load_default(size)
        assert isinstance(font, ImageFont.FreeTypeFont)
        return font
    return ImageFont.truetype(path, size)


def find_fonts(explicit: str | None = None) -> Fonts:
    if explicit:
        return Fonts(explicit)
    for p in CJK_FONTS:
        if Path(p).is_file():
            return Fonts(p)
    return Fonts(None)


def _text(name: str, fonts: Fonts) -> str:
    py = pinyin(name)
    if fonts.cjk:
        return f"{name} {py}" if py else name
    return py or ""


@cache
def _label_image(
    text: str, angle: float, size: int, font_path: str | None, color: tuple[int, int, int]
) -> Image.Image:
    font = _font(font_path, size)
    left, top, right, bottom = (round(v) for v in font.getbbox(text, stroke_width=2))
    img = Image.new("RGBA", (right - left + 2, bottom - top + 2), (0, 0, 0, 0))
    ImageDraw.Draw(img).text(
        (1 - left, 1 - top),
        text,
        font=font,
        fill=(*color, 255),
        stroke_width=2,
        stroke_fill=(255, 255, 255, 235),
    )
    if angle:
        # keep text upright: read left to right or bottom to top
        a = ((angle + 90) % 180) - 90
        img = img.rotate(-a if a != 90 else 90, resample=Image.Resampling.BICUBIC, expand=True)
    return img


def _bounds(points: Sequence[tuple[float, float]]) -> tuple[float, float, float, float]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def _hits(b: tuple[float, float, float, float], ox: float, oy: float, pad: float) -> bool:
    return b[2] >= ox - pad and b[0] <= ox + TILE + pad and b[3] >= oy - pad and b[1] <= oy + TILE + pad


def render_tile(plan: MapPlan, z: int, x: int, y: int, fonts: Fonts) -> Image.Image:  # noqa: C901 — one pass per map layer
    """One 256×256 tile; labels crossing a tile edge are drawn in both tiles at the same
    world position, so the halves meet."""
    ox, oy = x * TILE, y * TILE
    img = Image.new("RGB", (TILE, TILE), _BG)
    draw = ImageDraw.Draw(img)

    def px(p: LatLon) -> tuple[float, float]:
        wx, wy = _world(p[0], p[1], z)
        return wx - ox, wy - oy

    for patch in plan.patches:
        if patch.kind in ("block", "park") and z < 15:
            continue
        pts = [px(p) for p in patch.ring]
        b = _bounds(pts)
        if _hits(b, 0, 0, 0) and (b[2] - b[0] >= 1 or b[3] - b[1] >= 1):
            draw.polygon(pts, fill=_COLORS[patch.kind])
    if plan.river:
        pts = [px(p) for p in plan.river]
        width = max(2, round(60 / 2 ** (16 - z) * 2)) if z >= 12 else 2
        draw.line(pts, fill=_COLORS["water"], width=width, joint="curve")
    order = ("lane", "street", "country", "arterial", "highway")
    visible = [r for r in plan.roads if z >= _ROAD_STYLE[r.kind][1]]
    segs = [(r, [px(p) for p in r.points]) for r in sorted(visible, key=lambda r: order.index(r.kind))]
    segs = [(r, pts) for r, pts in segs if _hits(_bounds(pts), 0, 0, 24)]
    for casing in (True, False):
        for road, pts in segs:
            w = max(2.0 if road.kind == "highway" else 1.0, _ROAD_STYLE[road.kind][0] / 2 ** (16 - z))
            if casing:
                if w >= 3:
                    draw.line(pts, fill=_COLORS["casing"], width=round(w + 2), joint="curve")
            else:
                draw.line(pts, fill=_COLORS[road.kind], width=round(w), joint="curve")

    layer = img.convert("RGBA")
    size = 12 if z < 16 else 13
    for label in plan.labels:
        first = _LABEL_ZOOM.get(label.kind)
        if first is None or z < first:
            continue
        thin = 2 ** max(0, 16 - z)  # every label at 16, every other at 15, …
        if label.index % thin:
            continue
        text = _text(label.text, fonts)
        if not text:
            continue
        wx, wy = px(label.at)
        im = _label_image(text, label.angle, size, fonts.path, _COLORS["text"])
        left, top = round(wx + ox - im.width / 2) - ox, round(wy + oy - im.height / 2) - oy
        if left > TILE or top > TILE or left + im.width < 0 or top + im.height < 0:
            continue
        _paste(layer, im, left, top)
    for place in plan.places:
        lo, hi = _PLACE_ZOOM[place.rank]
        if not lo <= z <= hi:
            continue
        text = _text(place.name, fonts)
        if not text:
            continue
        wx, wy = px(place.at)
        im = _label_image(text, 0.0, _PLACE_SIZE[place.rank], fonts.path, _COLORS["place"])
        left, top = round(wx + ox - im.width / 2) - ox, round(wy + oy - im.height / 2 - 14) - oy
        _paste(layer, im, left, top)
    return layer.convert("RGB")


def _paste(layer: Image.Image, im: Image.Image, left: int, top: int) -> None:
    """Composite ``im`` with its top-left at (left, top), clipped to the tile."""
    if left >= TILE or top >= TILE or left + im.width <= 0 or top + im.height <= 0:
        return
    sx, sy = max(0, -left), max(0, -top)
    layer.alpha_composite(im, (left + sx, top + sy), (sx, sy, im.width, im.height))


def encode_png(img: Image.Image) -> bytes:
    """A small, deterministic PNG: a fixed 64-colour palette chosen by median cut."""
    buf = io.BytesIO()
    img.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        buf, format="PNG", optimize=True
    )
    return buf.getvalue()


# --- the archive ------------------------------------------------------------------------


class _ArchiveWriter(Protocol):
    def write_tile(self, tileid: int, data: bytes) -> None: ...

    def finalize(self, header: dict[str, object], metadata: dict[str, object]) -> None: ...


@dataclass(frozen=True)
class BuildResult:
    path: Path
    tiles: int
    unique_tiles: int
    size_bytes: int
    min_zoom: int
    max_zoom: int
    cjk_labels: bool


def iter_tiles(
    plan: MapPlan, min_zoom: int, max_zoom: int, fonts: Fonts
) -> Iterator[tuple[int, int, int, bytes]]:
    """(z, x, y, png) over the plan's bbox; tiles with nothing on them share one image."""
    blank: bytes | None = None
    for z in range(min_zoom, max_zoom + 1):
        x0, y0, x1, y1 = tile_range(plan.bbox, z)
        for x in range(x0, x1 + 1):
            for y in range(y0, y1 + 1):
                img = render_tile(plan, z, x, y, fonts)
                if img.getextrema() == tuple((c, c) for c in _BG):
                    blank = blank or encode_png(img)
                    yield z, x, y, blank
                else:
                    yield z, x, y, encode_png(img)


def build_basemap(
    out: Path,
    *,
    seed: int = DEMO_SEED,
    min_zoom: int = DEFAULT_MIN_ZOOM,
    max_zoom: int = DEFAULT_MAX_ZOOM,
    font: str | None = None,
) -> BuildResult:
    """Write the demo county's basemap to ``out`` (a PMTiles v3 archive of PNG tiles)."""
    from pmtiles import writer as pmtiles_writer
    from pmtiles.tile import Compression, TileType, zxy_to_tileid

    # pmtiles' writer has no type annotations; this is the part of it used here
    new_writer = cast("Callable[[BinaryIO], _ArchiveWriter]", pmtiles_writer.Writer)

    if not 0 <= min_zoom <= max_zoom <= 20:
        raise ValueError(f"zooms must satisfy 0 <= min <= max <= 20, got {min_zoom}..{max_zoom}")
    county = generate_demo_county(seed)
    plan = plan_county(county, seed)
    fonts = find_fonts(font)
    tiles = sorted(
        ((zxy_to_tileid(z, x, y), png) for z, x, y, png in iter_tiles(plan, min_zoom, max_zoom, fonts)),
        key=lambda t: t[0],
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    min_lon, min_lat, max_lon, max_lat = plan.bbox
    with tmp.open("wb") as f:
        writer = new_writer(f)
        for tile_id, png in tiles:
            writer.write_tile(tile_id, png)
        writer.finalize(
            {
                "tile_type": TileType.PNG,
                "tile_compression": Compression.NONE,
                "min_lon_e7": math.floor(min_lon * 1e7),
                "min_lat_e7": math.floor(min_lat * 1e7),
                "max_lon_e7": math.ceil(max_lon * 1e7),
                "max_lat_e7": math.ceil(max_lat * 1e7),
                "center_zoom": min(max_zoom, max(min_zoom, 13)),
                "center_lon_e7": round(SEAT_LON * 1e7),
                "center_lat_e7": round(SEAT_LAT * 1e7),
            },
            {
                "name": "CareCall demo county",
                "description": "Generated streets of the invented demo county (not a real map).",
                "attribution": "CareCall demo map (generated)",
                "type": "baselayer",
                "format": "png",
                "seed": seed,
            },
        )
    tmp.replace(out)
    return BuildResult(
        path=out,
        tiles=len(tiles),
        unique_tiles=len({png for _, png in tiles}),
        size_bytes=out.stat().st_size,
        min_zoom=min_zoom,
        max_zoom=max_zoom,
        cjk_labels=fonts.cjk,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``carecall basemap``: (re)build the demo county's basemap."""
    parser = argparse.ArgumentParser(
        prog="carecall basemap",
        description="Build the demo county's street map (a PMTiles archive of PNG tiles). "
        "A real deployment sets basemap_file to an extract of its own county instead.",
    )
    parser.add_argument(
        "--out", type=Path, default=DEMO_BASEMAP, help="archive to write (default: the demo's)"
    )
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help="demo county seed")
    parser.add_argument("--min-zoom", type=int, default=DEFAULT_MIN_ZOOM)
    parser.add_argument("--max-zoom", type=int, default=DEFAULT_MAX_ZOOM)
    parser.add_argument("--font", default=None, help="a TrueType/OpenType font with Chinese glyphs")
    args = parser.parse_args(argv)
    try:
        result = build_basemap(
            args.out, seed=args.seed, min_zoom=args.min_zoom, max_zoom=args.max_zoom, font=args.font
        )
    except (ValueError, OSError) as exc:
        print(f"carecall basemap: {exc}", file=sys.stderr)
        return 2
    labels = "Chinese + pinyin" if result.cjk_labels else "pinyin only (no CJK font found; use --font)"
    print(
        f"wrote {result.path}: {result.tiles} tiles ({result.unique_tiles} distinct), "
        f"zoom {result.min_zoom}-{result.max_zoom}, {result.size_bytes / 1024:.0f} KiB, labels {labels}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
