"""``carecall report …``: the oversight figures in the terminal, or as JSON, CSV or XLSX.

The same report functions as the API (dispatcher.oversight.reports) produce the rows, so
the terminal, the downloads and the dashboard show the same numbers. The CLI runs with
the database's full view (it is an operator's shell on the server); ``--station``
narrows a report to one station's subtree.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from carecall.shell.cli.common import run, settings_from
from dispatcher.calls.routing import RoutingConfig
from dispatcher.oversight import export, reports
from dispatcher.oversight.figures import GROUPINGS, Grouping, Period, default_period
from dispatcher.oversight.targets import Targets, TargetsError
from dispatcher.oversight.targets_file import load_targets
from dispatcher.oversight.text import parse_lang

__all__ = ["report_app"]

report_app = typer.Typer(
    help="Oversight reports: response times, review list, coverage, device health.", no_args_is_help=True
)


class OutFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
    xlsx = "xlsx"


FromOpt = Annotated[
    datetime | None,
    typer.Option("--from", formats=["%Y-%m-%d"], help="First local day (default: 1st of this month)."),
]
ToOpt = Annotated[
    datetime | None,
    typer.Option("--to", formats=["%Y-%m-%d"], help="Last local day, included (default: today)."),
]
StationOpt = Annotated[str | None, typer.Option("--station", help="Only this station's subtree.")]
FormatOpt = Annotated[OutFormat, typer.Option("--format", "-f", help="table, json, csv or xlsx.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Write to FILE (xlsx needs it).")]
AsOfOpt = Annotated[
    datetime | None,
    typer.Option(
        "--as-of",
        formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"],
        help="Compute as of this moment (UTC if no offset): reproduces a report handed in earlier.",
    ),
]
LangOpt = Annotated[
    str | None,
    typer.Option("--lang", help="zh-CN or en: CSV/XLSX column headers in words (default: column names)."),
]
TargetsOpt = Annotated[
    Path | None, typer.Option("--targets", help="Targets file (default config/oversight.yaml).")
]


def _fail(message: str) -> None:
    typer.echo(f"carecall: {message}", err=True)
    raise typer.Exit(2)


def _targets(path: Path | None) -> Targets:
    try:
        return load_targets(path)
    except TargetsError as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits


def _routing() -> RoutingConfig:
    """The routing section of the dispatch file; a bad file stops the command with one line."""
    from dispatcher.calls.config_files import DispatchConfigError, load_dispatch_config

    try:
        return load_dispatch_config(settings_from().dispatch_file).routing
    except DispatchConfigError as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits


def _now(as_of: datetime | None) -> datetime:
    if as_of is None:
        return datetime.now(UTC)
    return as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)


def _period(start: datetime | None, end: datetime | None, now: datetime) -> Period:
    base = default_period(now)
    s: date = start.date() if start else base.start
    e: date = end.date() if end else max(s, base.end)
    try:
        return Period(s, e)
    except ValueError as exc:
        _fail(str(exc))
        raise


def emit(
    report: dict[str, Any],
    fmt: OutFormat,
    out: Path | None,
    *,
    name: str,
    columns: list[str] | None = None,
    lang: str | None = None,
) -> None:
    """Print or write a report; the bytes of CSV/XLSX are those the API sends (with
    ``lang``, the headers are words in that language, as the API's ``lang=``)."""
    try:
        language = None if lang is None else parse_lang(lang)
    except ValueError as exc:
        _fail(str(exc))
        raise
    rows = reports.rows_of(report)
    if fmt is OutFormat.xlsx:
        if out is None:
            _fail("--format xlsx needs --out FILE")
            return
        out.write_bytes(export.to_xlsx(rows, sheet=name, lang=language))
        typer.echo(f"{len(rows)} rows written to {out}", err=True)
        return
    if fmt is OutFormat.csv:
        data = export.to_csv(rows, language)
    elif fmt is OutFormat.json:
        data = (json.dumps(report, ensure_ascii=False, indent=2, default=str) + "\n").encode("utf-8")
    else:
        data = (export.to_table(rows, columns) + "\n").encode("utf-8")
    if out is not None:
        out.write_bytes(data)
        typer.echo(f"{len(rows)} rows written to {out}", err=True)
    else:
        typer.echo(data.decode("utf-8").removeprefix("\ufeff"), nl=False)


def _run(go: Callable[[Any], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Open the configured database (settings as every carecall command reads them)."""
    from carecall.shell.runtime import open_core

    s = settings_from()

    async def main() -> dict[str, Any]:
        core = await open_core(s, migrate=False)
        try:
            return await go(core.maker)
        finally:
            await core.close()

    try:
        return run(main())
    except LookupError as exc:
        _fail(f"no such station {exc.args[0] if exc.args else ''!r}")
        raise


_STAT_COLUMNS = [
    "calls",
    "answer_median_s",
    "answer_p90_s",
    "answer_p95_s",
    "answer_p99_s",
    "answer_within_60s_pct",
    "answer_within_180s_pct",
    "arrival_median_s",
    "arrival_p90_s",
    "arrival_within_limit_pct",
    "close_median_s",
    "escalated",
    "unanswered",
]


def _present(rows: list[dict[str, Any]], wanted: list[str]) -> list[str]:
    have = export.columns_of(rows)
    return [c for c in wanted if c in have]


@report_app.command("summary")
def summary_cmd(
    start: FromOpt = None,
    end: ToOpt = None,
    station: StationOpt = None,
    format: FormatOpt = OutFormat.table,
    out: OutOpt = None,
    targets: TargetsOpt = None,
    as_of: AsOfOpt = None,
    lang: LangOpt = None,
) -> None:
    """Headline figures of the period: percentiles, compliance, escalations."""
    t = _targets(targets)
    now = _now(as_of)
    period = _period(start, end, now)
    rep = _run(
        lambda maker: reports.summary_report(
            maker, where=reports.ReportScope(None, station), period=period, targets=t, now=now
        )
    )
    if format is OutFormat.table:
        row = rep["summary"]
        typer.echo(export.to_table([{"figure": k, "value": v} for k, v in row.items()]))
        return
    emit(rep, format, out, name="summary", lang=lang)


@report_app.command("aggregates")
def aggregates_cmd(
    by: Annotated[str, typer.Option("--by", help=f"One of {', '.join(GROUPINGS)}.")] = "station",
    start: FromOpt = None,
    end: ToOpt = None,
    station: StationOpt = None,
    format: FormatOpt = OutFormat.table,
    out: OutOpt = None,
    targets: TargetsOpt = None,
    as_of: AsOfOpt = None,
    lang: LangOpt = None,
) -> None:
    """Count, median, p90/p95/p99 and compliance per station, street, county, type,
    priority, hour, day, week or month."""
    if by not in GROUPINGS:
        _fail(f"--by must be one of {', '.join(GROUPINGS)}")
    grouping: Grouping = by  # type: ignore[assignment]  # checked against GROUPINGS above
    t = _targets(targets)
    now = _now(as_of)
    period = _period(start, end, now)
    rep = _run(
        lambda maker: reports.aggregates_report(
            maker, where=reports.ReportScope(None, station), period=period, by=grouping, targets=t, now=now
        )
    )
    emit(
        rep,
        format,
        out,
        name=f"aggregates-{by}",
        columns=_present(rep["rows"], ["key", "label", *_STAT_COLUMNS]),
        lang=lang,
    )


@report_app.command("review")
def review_cmd(
    start: FromOpt = None,
    end: ToOpt = None,
    station: StationOpt = None,
    format: FormatOpt = OutFormat.table,
    out: OutOpt = None,
    targets: TargetsOpt = None,
    as_of: AsOfOpt = None,
    lang: LangOpt = None,
) -> None:
    """Calls to review: answered late, escalated to the county, arrival over the limit,
    closed as no access (``--format json`` includes each timeline)."""
    t = _targets(targets)
    now = _now(as_of)
    period = _period(start, end, now)
    rep = _run(
        lambda maker: reports.review_report(
            maker,
            where=reports.ReportScope(None, station),
            period=period,
            targets=t,
            now=now,
            timelines=format is OutFormat.json,
        )
    )
    emit(
        rep,
        format,
        out,
        name="review",
        columns=[
            "call_id",
            "reasons",
            "started_local",
            "station_id",
            "type",
            "priority",
            "answer_s",
            "arrival_s",
            "outcome",
        ],
        lang=lang,
    )


@report_app.command("coverage")
def coverage_cmd(
    station: StationOpt = None,
    add_staff_station: Annotated[
        str | None, typer.Option("--add-staff-station", help="What if this station had more responders?")
    ] = None,
    n: Annotated[int, typer.Option("--n", help="How many more (negative: fewer).", min=-50, max=50)] = 1,
    streets: Annotated[
        bool, typer.Option("--streets", help="One row per street instead of per home.")
    ] = False,
    shift: Annotated[
        str | None,
        typer.Option(
            "--shift", help="Staff rostered on this shift (config/oversight.yaml) instead of on duty now."
        ),
    ] = None,
    by_shift: Annotated[
        bool, typer.Option("--by-shift", help="One row per shift and street: every shift of the roster.")
    ] = False,
    format: FormatOpt = OutFormat.table,
    out: OutOpt = None,
    targets: TargetsOpt = None,
    lang: LangOpt = None,
) -> None:
    """Travel time from every home to the nearest staffed station (on duty now, or on a
    shift of the roster), homes outside the service circle by street, and a what-if for
    adding staff."""
    t = _targets(targets)
    routing = _routing()
    try:
        rep = _run(
            lambda maker: reports.coverage_report(
                maker,
                where=reports.ReportScope(None, station),
                routing=routing,
                targets=t,
                add_staff_station=add_staff_station,
                add=n,
                shift=shift,
                by_shift=by_shift,
            )
        )
    except ValueError as exc:
        _fail(str(exc))
        raise
    if by_shift:
        rep["rows"] = rep["by_shift"]
    elif streets or format is OutFormat.table:
        rep["rows"] = rep["by_street"]
    if format is OutFormat.table and out is None:
        sh = rep["shift"]
        typer.echo(
            f"coverage with staff {rep['staffing']}"
            + (f" {sh['name']} ({sh['hours']})" if sh else "")
            + f"; the shift now is {rep['current_shift'] or '-'}"
            + (
                f"; rostered on shifts the config lacks: {' '.join(rep['unknown_shift_names'])}"
                if rep["unknown_shift_names"]
                else ""
            )
        )
    emit(rep, format, out, name="coverage", lang=lang)
    wi = rep["what_if"]
    if wi is not None and format is OutFormat.table:
        typer.echo(
            f"\nwhat if {wi['station_id']} had {wi['added']:+d} responder(s): covered {wi['covered_before']} → "
            f"{wi['covered_after']}; newly covered: {' '.join(wi['newly_covered']) or '-'}; "
            f"newly uncovered: {' '.join(wi['newly_uncovered']) or '-'}"
        )


@report_app.command("devices")
def devices_cmd(
    start: FromOpt = None,
    end: ToOpt = None,
    station: StationOpt = None,
    format: FormatOpt = OutFormat.table,
    out: OutOpt = None,
    targets: TargetsOpt = None,
    as_of: AsOfOpt = None,
    lang: LangOpt = None,
) -> None:
    """Device health: offline now, hours offline in the period, battery, last test,
    not tested in time, rejected messages."""
    t = _targets(targets)
    now = _now(as_of)
    period = _period(start, end, now)
    rep = _run(
        lambda maker: reports.devices_report(
            maker, where=reports.ReportScope(None, station), period=period, targets=t, now=now
        )
    )
    emit(
        rep,
        format,
        out,
        name="devices",
        columns=[
            "device_id",
            "home_id",
            "kind",
            "offline_now",
            "hours_offline",
            "battery_pct",
            "last_test_at",
            "not_tested",
            "rejected_messages",
        ],
        lang=lang,
    )


MonthOpt = Annotated[str, typer.Option("--month", help="YYYY-MM (local, Asia/Shanghai)")]


def _month_run(
    build: Callable[..., Awaitable[dict[str, Any]]], station: str | None, month: str, now: datetime
) -> dict[str, Any]:
    async def go(maker: Any) -> dict[str, Any]:
        async with maker() as s:
            return await build(s, scope=None, station_id=station, month=month, now=now)

    try:
        return _run(go)
    except ValueError as exc:
        _fail(str(exc))
        raise


@report_app.command("orders")
def orders_cmd(
    month: MonthOpt,
    by: Annotated[str, typer.Option("--by", help="kind, provider, station or cancellations")] = "kind",
    station: StationOpt = None,
    format: FormatOpt = OutFormat.table,
    out: OutOpt = None,
    as_of: AsOfOpt = None,
    lang: LangOpt = None,
) -> None:
    """Service orders of a month by kind, provider or station (volume, accept and
    completion within their service levels, satisfaction), or cancellations by reason;
    recomputed from the audit log."""
    from dispatcher.oversight.services_reports import orders_data

    if by not in ("kind", "provider", "station", "cancellations"):
        _fail(f"--by must be kind, provider, station or cancellations, not {by!r}")
    rep = _month_run(orders_data, station, month, _now(as_of))
    rep["rows"] = rep["cancellations"] if by == "cancellations" else rep[f"by_{by}"]
    columns = (
        None
        if by == "cancellations"
        else [
            "label",
            "orders",
            "done",
            "cancelled",
            "open",
            "accept_median_s",
            "accept_within_level_pct",
            "completion_median_s",
            "completion_within_level_pct",
            "satisfaction_mean",
            "not_done",
        ]
    )
    emit(rep, format, out, name=f"orders-{by}", columns=columns, lang=lang)


@report_app.command("visits")
def visits_cmd(
    month: MonthOpt,
    table: Annotated[str, typer.Option("--table", help="stations or not_visited")] = "stations",
    station: StationOpt = None,
    format: FormatOpt = OutFormat.table,
    out: OutOpt = None,
    as_of: AsOfOpt = None,
    lang: LangOpt = None,
) -> None:
    """Visit compliance of a month per station (due, done on time, late, missed), or the
    residents not visited; recomputed from the audit log."""
    from dispatcher.oversight.services_reports import visits_data

    if table not in ("stations", "not_visited"):
        _fail(f"--table must be stations or not_visited, not {table!r}")
    rep = _month_run(visits_data, station, month, _now(as_of))
    rep["rows"] = rep[table]
    columns = (
        None
        if table == "not_visited"
        else [
            "station_id",
            "due",
            "done_on_time",
            "late",
            "missed",
            "open",
            "cancelled",
            "visits_escalated",
            "on_time_pct",
            "not_visited",
        ]
    )
    emit(rep, format, out, name=f"visits-{table}", columns=columns, lang=lang)


@report_app.command("monthly")
def monthly_cmd(
    month: Annotated[str, typer.Option("--month", help="YYYY-MM")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")],
    station: StationOpt = None,
    targets: TargetsOpt = None,
    lang: Annotated[
        str, typer.Option("--lang", help="zh-CN or en: headings, codes, times and durations in words.")
    ] = "zh-CN",
) -> None:
    """The printable monthly report (self-contained HTML with charts) for a station or
    the whole county, in Chinese (default) or English."""
    from dispatcher.oversight.render import monthly_html

    try:
        language = parse_lang(lang)
    except ValueError as exc:
        _fail(str(exc))
        raise

    t = _targets(targets)
    routing = _routing()
    now = datetime.now(UTC)
    try:
        data = _run(
            lambda maker: reports.monthly_data(
                maker,
                where=reports.ReportScope(None, station),
                month=month,
                targets=t,
                routing=routing,
                now=now,
                lang=language,
            )
        )
    except ValueError as exc:
        _fail(str(exc))
        raise
    out.write_text(monthly_html(data, language), encoding="utf-8")
    typer.echo(f"monthly report {month} written to {out}")


@report_app.command("bench")
def bench_cmd(
    calls: Annotated[int, typer.Option("--calls", help="How many calls to generate.", min=1)] = 100_000,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="A scratch database (sqlite:///FILE or postgresql://…); it must hold no calls. Default: a temporary SQLite file.",
        ),
    ] = None,
    repeat: Annotated[int, typer.Option(help="Time each report this many times.", min=1)] = 3,
) -> None:
    """Fill a scratch database with N calls' audit rows and time the reports over them."""
    from carecall.shell.bench_reports import run_bench

    try:
        result = run(run_bench(calls=calls, database_url=database_url, repeat=repeat, echo=typer.echo))
    except ValueError as exc:
        _fail(str(exc))
        raise
    typer.echo(json.dumps(result, indent=2))
