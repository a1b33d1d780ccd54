"""One pattern for the registry's record endpoints.

A ``CrudSpec`` per kind of record says only what differs between kinds: the bodies, who
may change which fields, how a PATCH is merged and checked, whether reads are recorded
(residents' personal data) and what to do after a change (announce a device).
``add_crud_routes`` builds the list / get / create / patch / delete routes from it, all
answering the same way: a record outside the caller's scope is 404 exactly like one that
does not exist, an unknown reference is 422 naming the field, a change that would strand
other records is 409 saying what refers to them.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any, Generic, TypeVar, cast

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.auth.models import Role
from dispatcher.auth.principals import Principal, in_scope, require_role
from dispatcher.auth.privacy import log_reads
from dispatcher.registry import records
from dispatcher.registry.payloads import Page, RecordOut
from dispatcher.registry.records import Kind
from dispatcher.registry.schemas import RegistryRow

Maker = async_sessionmaker[AsyncSession]
OutT = TypeVar("OutT", bound=RecordOut)
R = TypeVar("R", bound=BaseModel)

MAX_PAGE = 500

ADMIN = require_role(Role.admin)
ADMIN_OR_OPERATOR = require_role(Role.admin, Role.operator)

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"page size (max {MAX_PAGE})")]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]  # beyond, the database's integer overflows
StationFilter = Annotated[
    str | None, Query(max_length=64, description="only this station and the stations under it")
]
HomeFilter = Annotated[str | None, Query(max_length=64)]


# =========================================================================== answers


def invalid(field: str | None, msg: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, so clients parse one format."""
    loc = ["body"] if field is None else ["body", field]
    return HTTPException(
        422,
        detail=[{"loc": loc, "msg": msg, "type": "value_error"}],
    )


def not_found(what: str, ident: object) -> HTTPException:
    # Same answer for "does not exist" and "outside your scope" (see the module docstring).
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no {what} {ident!r}")


def conflict(msg: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail=msg)


def validated(model: type[R], data: dict[str, Any]) -> R:
    """Validate merged (stored + patched) values with a row model: cross-field rules such
    as tier-matches-kind or hr_min < hr_max hold for the result, not just the patch."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HTTPException(
            422,
            detail=[
                {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_context=False)
            ],
        ) from None


def operator_may_only(p: Principal, changes: dict[str, Any], allowed: frozenset[str]) -> None:
    extra = set(changes) - allowed
    if p.role is not Role.admin and extra:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"operators may change only {', '.join(sorted(allowed))}; "
            f"{', '.join(sorted(extra))} needs an admin",
        )


@asynccontextmanager
async def transaction(maker: Maker) -> AsyncIterator[AsyncSession]:
    """One transaction per request. The service's refusals become 422/409; a constraint
    the checks missed (a concurrent insert, a call referencing a row) becomes 409 rather
    than 500."""
    try:
        async with maker() as session, session.begin():
            yield session
    except records.InvalidReference as exc:
        raise invalid(exc.field, exc.message) from None
    except records.Conflict as exc:
        raise conflict(str(exc)) from None
    except IntegrityError as exc:
        raise conflict(
            "the change conflicts with other records (duplicate id or a record still "
            "referenced); reload and try again"
        ) from exc


# =========================================================================== PATCH rules

# (row, column values to write) from the stored record and the changes of a PATCH body
Patcher = Callable[[Any, dict[str, Any]], tuple[RegistryRow | None, dict[str, Any]]]
Adjust = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


def validated_patch(
    row_model: type[RegistryRow], *, adjust: Adjust | None = None, write_all: bool = False
) -> Patcher:
    """Merge the changes into the stored values and validate the result with the import
    row model; write the changed columns (all of them with ``write_all``, for kinds where
    one field derives another)."""

    def patcher(record: Any, changes: dict[str, Any]) -> tuple[RegistryRow, dict[str, Any]]:
        current = {name: getattr(record, name) for name in row_model.model_fields if hasattr(record, name)}
        merged = current | changes
        row = validated(row_model, adjust(merged, changes) if adjust is not None else merged)
        return row, records.columns(row, None if write_all else list(changes))

    return patcher


def no_nulls(record: Any, changes: dict[str, Any]) -> tuple[None, dict[str, Any]]:
    """The PATCH body's own validation is the whole check; it only refuses nulls."""
    for name, value in changes.items():
        if value is None:
            raise invalid(name, f"{name} cannot be null")
    return None, changes


# =========================================================================== the pattern

Changed = Callable[[Principal, list[str]], Awaitable[None]]


def _as_is(p: Principal, out: OutT) -> OutT:
    return out


@dataclass(frozen=True, kw_only=True)
class CrudSpec(Generic[OutT]):
    """What one kind of record's endpoints need to know."""

    kind: Kind  # the URL segment and the OpenAPI tag
    name: str  # the singular in route names (get_station) and the path parameter ({station_id})
    out: type[OutT]
    create: type[RegistryRow] | None  # POST body; None: the kind has its own create route
    patch: type[BaseModel]
    patcher: Patcher
    patch_role: Callable[..., Any] = ADMIN
    operator_fields: frozenset[str] = frozenset()  # what an operator may PATCH
    home_filter: bool = False  # lists take ?home_id=
    records_reads: bool = False  # reads are recorded (dispatcher.auth.privacy)
    present: Callable[[Principal, OutT], OutT] = _as_is  # what this role may see of a record
    on_change: Changed | None = None  # after a PATCH or DELETE has committed
    patch_doc: str | None = None

    @property
    def noun(self) -> str:
        return records.TABLES[self.kind].noun

    @property
    def id_param(self) -> str:
        return f"{self.name}_id"

    @property
    def page(self) -> type[Page[OutT]]:
        # Page[out], spelt out because mypy takes ``out`` for a value; pydantic caches the model
        return cast("type[Page[OutT]]", Page.__class_getitem__(self.out))

    @property
    def item_path(self) -> str:
        return f"/{self.kind.value}/{{{self.id_param}}}"


async def load(session: AsyncSession, spec: CrudSpec[OutT], p: Principal, ident: str) -> Any:
    """The record if it exists and is in ``p``'s scope; 404 otherwise (the same answer)."""
    found = await records.get_scoped(session, kind=spec.kind, ident=ident)
    if found is None or not in_scope(p, found[1]):
        raise not_found(spec.noun, ident)
    return found[0]


async def _list(
    spec: CrudSpec[OutT],
    maker: Maker,
    p: Principal,
    *,
    limit: int,
    offset: int,
    station_id: str | None,
    home_id: str | None = None,
) -> Page[OutT]:
    async with maker() as s:
        allowed = await records.allowed_stations(s, scope=p.scope, station_id=station_id)
        rows, total = await records.list_page(
            s, kind=spec.kind, allowed=allowed, home_id=home_id, limit=limit, offset=offset
        )
        page = spec.page(
            items=[spec.out.model_validate(r) for r in rows], total=total, limit=limit, offset=offset
        )
    if spec.records_reads:
        await log_reads(
            maker,
            who=p,
            resident_ids=[item.id for item in page.items],
            route=f"GET /api/v1/{spec.kind.value}",
            now=datetime.now(UTC),
        )
    page.items = [spec.present(p, item) for item in page.items]
    return page


async def _get(spec: CrudSpec[OutT], maker: Maker, p: Principal, ident: str) -> OutT:
    async with maker() as s:
        out = spec.out.model_validate(await load(s, spec, p, ident))
    if spec.records_reads:
        await log_reads(
            maker, who=p, resident_ids=[out.id], route=f"GET /api/v1{spec.item_path}", now=datetime.now(UTC)
        )
    return spec.present(p, out)


async def _create(spec: CrudSpec[OutT], maker: Maker, row: RegistryRow) -> OutT:
    async with transaction(maker) as s:
        if await records.exists(s, kind=spec.kind, ident=row.id):
            raise conflict(f"{spec.noun} {row.id!r} already exists")
        await records.check_links(s, kind=spec.kind, row=row, current=None)
        return spec.out.model_validate(await records.add_record(s, kind=spec.kind, row=row))


async def _patch(spec: CrudSpec[OutT], maker: Maker, p: Principal, ident: str, body: BaseModel) -> OutT:
    changes = body.model_dump(exclude_unset=True)
    async with transaction(maker) as s:
        record = await load(s, spec, p, ident)
        operator_may_only(p, changes, spec.operator_fields)
        row, values = spec.patcher(record, changes)
        if row is not None:
            await records.check_links(s, kind=spec.kind, row=row, current=record)
        await records.update_record(s, record=record, values=values)
        out = spec.out.model_validate(record)
    if spec.on_change is not None:
        await spec.on_change(p, [ident])
    return out


async def _delete(spec: CrudSpec[OutT], maker: Maker, p: Principal, ident: str) -> Response:
    async with transaction(maker) as s:
        await records.delete_record(s, kind=spec.kind, record=await load(s, spec, p, ident))
    if spec.on_change is not None:
        await spec.on_change(p, [ident])
    return Response(status_code=204)


def _body(endpoint: Callable[..., Any], model: type[BaseModel]) -> Callable[..., Any]:
    """Give ``endpoint``'s ``body`` parameter its model: FastAPI reads the annotation to
    validate and document the body, and the model is a value of the spec."""
    endpoint.__annotations__["body"] = model
    return endpoint


def add_crud_routes(
    router: APIRouter, spec: CrudSpec[OutT], *, maker: Maker, caller: Callable[..., Any]
) -> None:
    """Add ``spec``'s list, get, create, patch and delete routes to ``router``."""
    Caller = Annotated[Principal, Depends(caller)]
    Ident = Annotated[str, Path(alias=spec.id_param)]
    base, item = f"/{spec.kind.value}", spec.item_path
    tags: list[str | Enum] = [spec.kind.value]

    async def list_plain(
        p: Caller, limit: Limit = 100, offset: Offset = 0, station_id: StationFilter = None
    ) -> Page[OutT]:
        return await _list(spec, maker, p, limit=limit, offset=offset, station_id=station_id)

    async def list_by_home(
        p: Caller,
        limit: Limit = 100,
        offset: Offset = 0,
        station_id: StationFilter = None,
        home_id: HomeFilter = None,
    ) -> Page[OutT]:
        return await _list(spec, maker, p, limit=limit, offset=offset, station_id=station_id, home_id=home_id)

    async def get(p: Caller, ident: Ident) -> OutT:
        return await _get(spec, maker, p, ident)

    async def create(body: Any) -> OutT:
        return await _create(spec, maker, body)

    async def patch(p: Caller, ident: Ident, body: Any) -> OutT:
        return await _patch(spec, maker, p, ident, body)

    async def delete(p: Caller, ident: Ident) -> Response:
        return await _delete(spec, maker, p, ident)

    lister = list_by_home if spec.home_filter else list_plain
    router.add_api_route(
        base, lister, methods=["GET"], response_model=spec.page, tags=tags, name=f"list_{spec.kind.value}"
    )
    router.add_api_route(
        item, get, methods=["GET"], response_model=spec.out, tags=tags, name=f"get_{spec.name}"
    )
    if spec.create is not None:
        router.add_api_route(
            base,
            _body(create, spec.create),
            methods=["POST"],
            response_model=spec.out,
            status_code=201,
            tags=tags,
            dependencies=[Depends(ADMIN)],
            name=f"create_{spec.name}",
        )
    router.add_api_route(
        item,
        _body(patch, spec.patch),
        methods=["PATCH"],
        response_model=spec.out,
        tags=tags,
        dependencies=[Depends(spec.patch_role)],
        name=f"patch_{spec.name}",
        description=spec.patch_doc,
    )
    router.add_api_route(
        item,
        delete,
        methods=["DELETE"],
        response_model=None,
        status_code=204,
        tags=tags,
        dependencies=[Depends(ADMIN)],
        name=f"delete_{spec.name}",
    )
