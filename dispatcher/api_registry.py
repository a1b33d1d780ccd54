"""Registry over HTTP: stations, staff, homes, residents (with contacts), devices, users.

Rules every endpoint follows, and why:

* Admins change anything. Operators read their scope and may make the changes a night
  shift needs without an admin (staff on duty, a device switched off or back on, a
  resident's contacts). Supervisors read their scope.
* A record outside the caller's scope answers 404, exactly like one that does not
  exist, so a community operator cannot probe which homes another community serves.
* Request bodies are validated by the same row models as file imports
  (``dispatcher.registry.schemas``), so the API and a spreadsheet accept the same data.
  Unknown references answer 422 naming the field; deleting something still referenced
  answers 409 saying what refers to it (delete nothing silently: station staff would
  otherwise cascade away).
* Device secrets are returned once, when issued; the database keeps only their hash.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from enum import Enum
from typing import Annotated, Any, Generic, TypeVar

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from dispatcher.auth import (
    DuplicateUsername,
    Principal,
    TokenSigner,
    UserOut,
    create_user,
    current_principal,
    hash_password,
    in_scope,
    require_role,
    station_subtree,
)
from dispatcher.models import (
    Area,
    Assignment,
    Call,
    Contact,
    Device,
    DeviceEvent,
    DeviceKind,
    Home,
    Resident,
    Role,
    Staff,
    Station,
    StationKind,
    Tier,
    User,
)
from dispatcher.registry.schemas import (
    PARENT_TIER,
    Address,
    BreathRate,
    ContactRow,
    HeartRate,
    HomeRow,
    Id,
    Lat,
    Lon,
    Name,
    OptionalPhone,
    ResidentRow,
    Shifts,
    StaffRole,
    StaffRow,
    StationName,
    StationRow,
)
from dispatcher.registry.service import issue_device, rekey_existing

Maker = async_sessionmaker[AsyncSession]
T = TypeVar("T")
R = TypeVar("R", bound=BaseModel)

MAX_PAGE = 500
MAX_CONTACTS = 20

ADMIN = require_role(Role.admin)
ADMIN_OR_OPERATOR = require_role(Role.admin, Role.operator)

# Fields an operator may change (everything else needs an admin).
OPERATOR_STAFF_FIELDS = frozenset({"on_duty"})
OPERATOR_DEVICE_FIELDS = frozenset({"enabled"})


# =========================================================================== models


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class StationOut(_Out):
    id: str
    name: str
    tier: str
    kind: str
    parent_id: str | None
    lat: float
    lon: float
    address: str
    phone: str
    area: str
    timezone: str


class StaffOut(_Out):
    id: str
    station_id: str
    name: str
    role: str
    phone: str
    on_duty: bool
    shifts: str = ""


class HomeOut(_Out):
    id: str
    station_id: str
    lat: float
    lon: float
    address: str
    area: str
    notes: str


class ContactOut(_Out):
    name: str
    relation: str
    phone: str
    priority: int


class ResidentOut(_Out):
    id: str
    home_id: str
    name: str
    sex: str
    birth_date: date
    capacity_level: int
    living_alone: bool
    conditions: list[str]
    notes: str
    hr_min: int | None
    hr_max: int | None
    rr_min: int | None
    rr_max: int | None
    contacts: list[ContactOut]


class DeviceOut(_Out):
    id: str
    home_id: str
    kind: str
    model: str
    heartbeat_s: int
    enabled: bool


class DeviceWithSecret(DeviceOut):
    # Shown once: only its hash is stored, so a lost secret means re-keying.
    secret: str


class _Patch(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class StationPatch(_Patch):
    name: StationName | None = None
    tier: Tier | None = None
    kind: StationKind | None = None
    parent_id: Id | None = None
    lat: Lat | None = None
    lon: Lon | None = None
    address: Address | None = None
    phone: OptionalPhone | None = None
    area: Area | None = None
    timezone: str | None = None


class StaffPatch(_Patch):
    station_id: Id | None = None
    name: Name | None = None
    role: StaffRole | None = None
    phone: OptionalPhone | None = None
    on_duty: bool | None = None
    shifts: Shifts | None = None


class HomePatch(_Patch):
    station_id: Id | None = None
    address: Address | None = None
    lat: Lat | None = None
    lon: Lon | None = None
    area: Area | None = None
    notes: str | None = None


class ResidentPatch(_Patch):
    home_id: Id | None = None
    name: Name | None = None
    sex: str | None = None
    birth_date: date | None = None
    capacity_level: int | None = None
    living_alone: bool | None = None
    conditions: list[str] | None = None
    notes: str | None = None
    hr_min: HeartRate = None
    hr_max: HeartRate = None
    rr_min: BreathRate = None
    rr_max: BreathRate = None


class DeviceCreate(_Patch):
    id: Id
    home_id: Id
    kind: DeviceKind
    model: Annotated[str, StringConstraints(max_length=64)] | None = None


class DevicePatch(_Patch):
    enabled: bool | None = None
    model: Annotated[str, StringConstraints(max_length=64)] | None = None
    heartbeat_s: Annotated[int, Field(ge=10, le=86_400)] | None = None


Username = Annotated[str, StringConstraints(pattern=r"^[\w.@-]{1,64}$")]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]
DisplayName = Annotated[str, StringConstraints(max_length=100)]
Locale = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}(-[A-Za-z]{2})?$")]


class UserCreate(_Patch):
    username: Username
    password: Password
    role: Role
    station_id: Id | None = None
    display_name: DisplayName = ""
    staff_id: Id | None = None
    locale: Locale | None = None


class UserPatch(_Patch):
    password: Password | None = None
    role: Role | None = None
    station_id: Id | None = None
    display_name: DisplayName | None = None
    staff_id: Id | None = None
    active: bool | None = None
    locale: Locale | None = None


# =========================================================================== helpers


def _invalid(field: str | None, msg: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, so clients parse one format."""
    loc = ["body"] if field is None else ["body", field]
    return HTTPException(
        422,
        detail=[{"loc": loc, "msg": msg, "type": "value_error"}],
    )


def _not_found(what: str, ident: object) -> HTTPException:
    # Same answer for "does not exist" and "outside your scope" (see module docstring).
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no {what} {ident!r}")


def _conflict(msg: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail=msg)


def _validated(model: type[R], data: dict[str, Any]) -> R:
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


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _columns(row: BaseModel, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Column values of a validated row (enums as their text, as stored)."""
    return {
        name: _plain(getattr(row, name))
        for name in (names if names is not None else list(type(row).model_fields))
    }


def _merged(obj: object, model: type[BaseModel], changes: dict[str, Any]) -> dict[str, Any]:
    current = {name: getattr(obj, name) for name in model.model_fields if hasattr(obj, name)}
    return current | changes


@asynccontextmanager
async def _tx(maker: Maker) -> AsyncIterator[AsyncSession]:
    """One transaction per request; a constraint the checks missed (a concurrent insert,
    a call referencing a row) becomes 409 rather than 500."""
    try:
        async with maker() as session, session.begin():
            yield session
    except IntegrityError as exc:
        raise _conflict(
            "the change conflicts with other records (duplicate id or a record still "
            "referenced); reload and try again"
        ) from exc


async def _require(session: AsyncSession, model: type[Any], ident: str, field: str, what: str) -> Any:
    obj = await session.get(model, ident)
    if obj is None:
        raise _invalid(field, f"unknown {what} {ident!r}")
    return obj


async def _allowed_stations(
    session: AsyncSession, p: Principal, station_id: str | None
) -> frozenset[str] | None:
    """Stations a list may show: the caller's scope, narrowed to ``station_id``'s
    subtree when given. None = no restriction."""
    allowed = p.scope
    if station_id is not None:
        subtree = await station_subtree(session, station_id)
        allowed = subtree if allowed is None else subtree & allowed
    return allowed


async def _page(session: AsyncSession, stmt: Select[Any], out: type[R], limit: int, offset: int) -> Page[R]:
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    rows = (await session.scalars(stmt.limit(limit).offset(offset))).all()
    return Page[R](items=[out.model_validate(r) for r in rows], total=total or 0, limit=limit, offset=offset)


async def _count(session: AsyncSession, stmt: Select[Any]) -> int:
    return await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0


async def _refuse_if_referenced(session: AsyncSession, what: str, refs: dict[str, Select[Any]]) -> None:
    found = [f"{n} {label}" for label, stmt in refs.items() if (n := await _count(session, stmt))]
    if found:
        raise _conflict(f"{what} is still referenced by {', '.join(found)}")


async def _home_station(session: AsyncSession, home_id: str) -> str | None:
    return await session.scalar(select(Home.station_id).where(Home.id == home_id))


def _operator_may_only(p: Principal, changes: dict[str, Any], allowed: frozenset[str]) -> None:
    extra = set(changes) - allowed
    if p.role is not Role.admin and extra:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"operators may change only {', '.join(sorted(allowed))}; "
            f"{', '.join(sorted(extra))} needs an admin",
        )


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"page size (max {MAX_PAGE})")]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]  # beyond, the database's integer overflows
StationFilter = Annotated[str | None, Query(description="only this station and the stations under it")]


# =========================================================================== router


def registry_router(maker: Maker, signer: TokenSigner) -> APIRouter:
    """All registry and user endpoints under ``/api/v1``; every one needs a bearer token."""
    principal_dep = current_principal(maker, signer)
    Caller = Annotated[Principal, Depends(principal_dep)]
    router = APIRouter(prefix="/api/v1", dependencies=[Depends(principal_dep)])

    # ------------------------------------------------------------------ stations

    async def check_parent(session: AsyncSession, row: StationRow) -> None:
        """Dispatch escalates up the tree, so a parent must exist exactly one tier up."""
        if row.parent_id is None:
            return
        parent = await _require(session, Station, row.parent_id, "parent_id", "parent station")
        expected = PARENT_TIER[row.tier]
        if expected is not None and parent.tier != expected.value:
            raise _invalid(
                "parent_id",
                f"parent station {parent.id!r} is a {parent.tier} station; a "
                f"{row.tier.value} station's parent must be a {expected.value} station",
            )

    @router.get("/stations", response_model=Page[StationOut], tags=["stations"])
    async def list_stations(
        p: Caller, limit: Limit = 100, offset: Offset = 0, station_id: StationFilter = None
    ) -> Page[StationOut]:
        async with maker() as s:
            stmt = select(Station).order_by(Station.id)
            allowed = await _allowed_stations(s, p, station_id)
            if allowed is not None:
                stmt = stmt.where(Station.id.in_(allowed))
            return await _page(s, stmt, StationOut, limit, offset)

    @router.get("/stations/{station_id}", response_model=StationOut, tags=["stations"])
    async def get_station(p: Caller, station_id: str) -> StationOut:
        async with maker() as s:
            st = await s.get(Station, station_id)
        if st is None or not in_scope(p, st.id):
            raise _not_found("station", station_id)
        return StationOut.model_validate(st)

    @router.post(
        "/stations",
        response_model=StationOut,
        status_code=201,
        tags=["stations"],
        dependencies=[Depends(ADMIN)],
    )
    async def create_station(row: StationRow) -> StationOut:
        async with _tx(maker) as s:
            if await s.get(Station, row.id) is not None:
                raise _conflict(f"station {row.id!r} already exists")
            await check_parent(s, row)
            st = Station(**_columns(row))
            s.add(st)
            await s.flush()
            return StationOut.model_validate(st)

    @router.patch(
        "/stations/{station_id}",
        response_model=StationOut,
        tags=["stations"],
        dependencies=[Depends(ADMIN)],
    )
    async def patch_station(station_id: str, patch: StationPatch) -> StationOut:
        changes = patch.model_dump(exclude_unset=True)
        async with _tx(maker) as s:
            st = await s.get(Station, station_id)
            if st is None:
                raise _not_found("station", station_id)
            merged = _merged(st, StationRow, changes)
            if "kind" in changes and "tier" not in changes:
                merged["tier"] = None  # the row model derives it from the new kind
            row = _validated(StationRow, merged)
            await check_parent(s, row)
            if row.tier.value != st.tier:
                children = await _count(s, select(Station.id).where(Station.parent_id == st.id))
                if children:
                    raise _conflict(
                        f"station {st.id!r} has {children} child station(s) that need a "
                        f"{st.tier} parent; move them first"
                    )
            for name, value in _columns(row).items():
                setattr(st, name, value)
            await s.flush()
            return StationOut.model_validate(st)

    @router.delete(
        "/stations/{station_id}", status_code=204, tags=["stations"], dependencies=[Depends(ADMIN)]
    )
    async def delete_station(station_id: str) -> Response:
        async with _tx(maker) as s:
            st = await s.get(Station, station_id)
            if st is None:
                raise _not_found("station", station_id)
            await _refuse_if_referenced(
                s,
                f"station {station_id!r}",
                {
                    "child station(s)": select(Station.id).where(Station.parent_id == station_id),
                    "home(s)": select(Home.id).where(Home.station_id == station_id),
                    "staff member(s)": select(Staff.id).where(Staff.station_id == station_id),
                    "user(s)": select(User.id).where(User.station_id == station_id),
                    "call(s)": select(Call.id).where(Call.station_id == station_id),
                },
            )
            await s.delete(st)
        return Response(status_code=204)

    # ------------------------------------------------------------------ staff

    @router.get("/staff", response_model=Page[StaffOut], tags=["staff"])
    async def list_staff(
        p: Caller, limit: Limit = 100, offset: Offset = 0, station_id: StationFilter = None
    ) -> Page[StaffOut]:
        async with maker() as s:
            stmt = select(Staff).order_by(Staff.id)
            allowed = await _allowed_stations(s, p, station_id)
            if allowed is not None:
                stmt = stmt.where(Staff.station_id.in_(allowed))
            return await _page(s, stmt, StaffOut, limit, offset)

    @router.get("/staff/{staff_id}", response_model=StaffOut, tags=["staff"])
    async def get_staff(p: Caller, staff_id: str) -> StaffOut:
        async with maker() as s:
            member = await s.get(Staff, staff_id)
        if member is None or not in_scope(p, member.station_id):
            raise _not_found("staff member", staff_id)
        return StaffOut.model_validate(member)

    @router.post(
        "/staff",
        response_model=StaffOut,
        status_code=201,
        tags=["staff"],
        dependencies=[Depends(ADMIN)],
    )
    async def create_staff(row: StaffRow) -> StaffOut:
        async with _tx(maker) as s:
            if await s.get(Staff, row.id) is not None:
                raise _conflict(f"staff member {row.id!r} already exists")
            await _require(s, Station, row.station_id, "station_id", "station")
            member = Staff(**_columns(row))
            s.add(member)
            await s.flush()
            return StaffOut.model_validate(member)

    @router.patch(
        "/staff/{staff_id}",
        response_model=StaffOut,
        tags=["staff"],
        dependencies=[Depends(ADMIN_OR_OPERATOR)],
    )
    async def patch_staff(p: Caller, staff_id: str, patch: StaffPatch) -> StaffOut:
        changes = patch.model_dump(exclude_unset=True)
        async with _tx(maker) as s:
            member = await s.get(Staff, staff_id)
            if member is None or not in_scope(p, member.station_id):
                raise _not_found("staff member", staff_id)
            _operator_may_only(p, changes, OPERATOR_STAFF_FIELDS)
            row = _validated(StaffRow, _merged(member, StaffRow, changes))
            if row.station_id != member.station_id:
                await _require(s, Station, row.station_id, "station_id", "station")
            for name, value in _columns(row, list(changes)).items():
                setattr(member, name, value)
            await s.flush()
            return StaffOut.model_validate(member)

    @router.delete("/staff/{staff_id}", status_code=204, tags=["staff"], dependencies=[Depends(ADMIN)])
    async def delete_staff(staff_id: str) -> Response:
        async with _tx(maker) as s:
            member = await s.get(Staff, staff_id)
            if member is None:
                raise _not_found("staff member", staff_id)
            await _refuse_if_referenced(
                s,
                f"staff member {staff_id!r}",
                {"call assignment(s)": select(Assignment.id).where(Assignment.staff_id == staff_id)},
            )
            await s.delete(member)
        return Response(status_code=204)

    # ------------------------------------------------------------------ homes

    @router.get("/homes", response_model=Page[HomeOut], tags=["homes"])
    async def list_homes(
        p: Caller, limit: Limit = 100, offset: Offset = 0, station_id: StationFilter = None
    ) -> Page[HomeOut]:
        async with maker() as s:
            stmt = select(Home).order_by(Home.id)
            allowed = await _allowed_stations(s, p, station_id)
            if allowed is not None:
                stmt = stmt.where(Home.station_id.in_(allowed))
            return await _page(s, stmt, HomeOut, limit, offset)

    @router.get("/homes/{home_id}", response_model=HomeOut, tags=["homes"])
    async def get_home(p: Caller, home_id: str) -> HomeOut:
        async with maker() as s:
            home = await s.get(Home, home_id)
        if home is None or not in_scope(p, home.station_id):
            raise _not_found("home", home_id)
        return HomeOut.model_validate(home)

    @router.post(
        "/homes",
        response_model=HomeOut,
        status_code=201,
        tags=["homes"],
        dependencies=[Depends(ADMIN)],
    )
    async def create_home(row: HomeRow) -> HomeOut:
        async with _tx(maker) as s:
            if await s.get(Home, row.id) is not None:
                raise _conflict(f"home {row.id!r} already exists")
            await _require(s, Station, row.station_id, "station_id", "station")
            home = Home(**_columns(row))
            s.add(home)
            await s.flush()
            return HomeOut.model_validate(home)

    @router.patch("/homes/{home_id}", response_model=HomeOut, tags=["homes"], dependencies=[Depends(ADMIN)])
    async def patch_home(home_id: str, patch: HomePatch) -> HomeOut:
        changes = patch.model_dump(exclude_unset=True)
        async with _tx(maker) as s:
            home = await s.get(Home, home_id)
            if home is None:
                raise _not_found("home", home_id)
            row = _validated(HomeRow, _merged(home, HomeRow, changes))
            if row.station_id != home.station_id:
                await _require(s, Station, row.station_id, "station_id", "station")
            for name, value in _columns(row, list(changes)).items():
                setattr(home, name, value)
            await s.flush()
            return HomeOut.model_validate(home)

    @router.delete("/homes/{home_id}", status_code=204, tags=["homes"], dependencies=[Depends(ADMIN)])
    async def delete_home(home_id: str) -> Response:
        async with _tx(maker) as s:
            home = await s.get(Home, home_id)
            if home is None:
                raise _not_found("home", home_id)
            await _refuse_if_referenced(
                s,
                f"home {home_id!r}",
                {
                    "resident(s)": select(Resident.id).where(Resident.home_id == home_id),
                    "device(s)": select(Device.id).where(Device.home_id == home_id),
                    "call(s)": select(Call.id).where(Call.home_id == home_id),
                },
            )
            await s.delete(home)
        return Response(status_code=204)

    # ------------------------------------------------------------------ residents

    async def load_resident(s: AsyncSession, p: Principal, resident_id: str) -> Resident:
        resident = await s.get(Resident, resident_id, options=[selectinload(Resident.contacts)])
        if resident is None or not in_scope(p, await _home_station(s, resident.home_id)):
            raise _not_found("resident", resident_id)
        return resident

    @router.get("/residents", response_model=Page[ResidentOut], tags=["residents"])
    async def list_residents(
        p: Caller,
        limit: Limit = 100,
        offset: Offset = 0,
        station_id: StationFilter = None,
        home_id: str | None = None,
    ) -> Page[ResidentOut]:
        async with maker() as s:
            stmt = (
                select(Resident)
                .join(Home, Home.id == Resident.home_id)
                .options(selectinload(Resident.contacts))
                .order_by(Resident.id)
            )
            allowed = await _allowed_stations(s, p, station_id)
            if allowed is not None:
                stmt = stmt.where(Home.station_id.in_(allowed))
            if home_id is not None:
                stmt = stmt.where(Resident.home_id == home_id)
            return await _page(s, stmt, ResidentOut, limit, offset)

    @router.get("/residents/{resident_id}", response_model=ResidentOut, tags=["residents"])
    async def get_resident(p: Caller, resident_id: str) -> ResidentOut:
        async with maker() as s:
            return ResidentOut.model_validate(await load_resident(s, p, resident_id))

    @router.post(
        "/residents",
        response_model=ResidentOut,
        status_code=201,
        tags=["residents"],
        dependencies=[Depends(ADMIN)],
    )
    async def create_resident(row: ResidentRow) -> ResidentOut:
        async with _tx(maker) as s:
            if await s.get(Resident, row.id) is not None:
                raise _conflict(f"resident {row.id!r} already exists")
            await _require(s, Home, row.home_id, "home_id", "home")
            values = _columns(row)
            values["conditions"] = list(row.conditions)
            values["contacts"] = [Contact(**_columns(c)) for c in row.contacts]
            resident = Resident(**values)
            s.add(resident)
            await s.flush()
            return ResidentOut.model_validate(resident)

    @router.patch(
        "/residents/{resident_id}",
        response_model=ResidentOut,
        tags=["residents"],
        dependencies=[Depends(ADMIN)],
    )
    async def patch_resident(p: Caller, resident_id: str, patch: ResidentPatch) -> ResidentOut:
        changes = patch.model_dump(exclude_unset=True)
        async with _tx(maker) as s:
            resident = await load_resident(s, p, resident_id)
            merged = _merged(resident, ResidentRow, changes)
            merged.pop("contacts", None)  # contacts change through PUT .../contacts
            row = _validated(ResidentRow, merged)
            if row.home_id != resident.home_id:
                await _require(s, Home, row.home_id, "home_id", "home")
            for name, value in _columns(row, list(changes)).items():
                setattr(resident, name, list(value) if name == "conditions" else value)
            await s.flush()
            return ResidentOut.model_validate(resident)

    @router.put(
        "/residents/{resident_id}/contacts",
        response_model=ResidentOut,
        tags=["residents"],
        dependencies=[Depends(ADMIN_OR_OPERATOR)],
    )
    async def put_contacts(
        p: Caller,
        resident_id: str,
        contacts: Annotated[list[ContactRow], Body(max_length=MAX_CONTACTS)],
    ) -> ResidentOut:
        """Replace the whole contact list (the order families are called in)."""
        priorities = [c.priority for c in contacts]
        if len(set(priorities)) != len(priorities):
            raise _invalid(None, "two contacts share a priority; each needs its own place in the order")
        async with _tx(maker) as s:
            resident = await load_resident(s, p, resident_id)
            resident.contacts = [Contact(**_columns(c)) for c in sorted(contacts, key=lambda c: c.priority)]
            await s.flush()
            return ResidentOut.model_validate(resident)

    @router.delete(
        "/residents/{resident_id}",
        status_code=204,
        tags=["residents"],
        dependencies=[Depends(ADMIN)],
    )
    async def delete_resident(p: Caller, resident_id: str) -> Response:
        # Calls keep their history: their resident_id is set to NULL by the database.
        async with _tx(maker) as s:
            await s.delete(await load_resident(s, p, resident_id))
        return Response(status_code=204)

    # ------------------------------------------------------------------ devices

    async def load_device(s: AsyncSession, p: Principal, device_id: str) -> Device:
        device = await s.get(Device, device_id)
        if device is None or not in_scope(p, await _home_station(s, device.home_id)):
            raise _not_found("device", device_id)
        return device

    @router.get("/devices", response_model=Page[DeviceOut], tags=["devices"])
    async def list_devices(
        p: Caller,
        limit: Limit = 100,
        offset: Offset = 0,
        station_id: StationFilter = None,
        home_id: str | None = None,
    ) -> Page[DeviceOut]:
        async with maker() as s:
            stmt = select(Device).join(Home, Home.id == Device.home_id).order_by(Device.id)
            allowed = await _allowed_stations(s, p, station_id)
            if allowed is not None:
                stmt = stmt.where(Home.station_id.in_(allowed))
            if home_id is not None:
                stmt = stmt.where(Device.home_id == home_id)
            return await _page(s, stmt, DeviceOut, limit, offset)

    @router.get("/devices/{device_id}", response_model=DeviceOut, tags=["devices"])
    async def get_device(p: Caller, device_id: str) -> DeviceOut:
        async with maker() as s:
            return DeviceOut.model_validate(await load_device(s, p, device_id))

    @router.post(
        "/devices",
        response_model=DeviceWithSecret,
        status_code=201,
        tags=["devices"],
        dependencies=[Depends(ADMIN)],
    )
    async def create_device(body: DeviceCreate) -> DeviceWithSecret:
        async with _tx(maker) as s:
            if await s.get(Device, body.id) is not None:
                # issue_device would silently re-key it; a new secret must be asked for.
                raise _conflict(
                    f"device {body.id!r} already exists; POST /api/v1/devices/{body.id}/rekey "
                    "for a new secret"
                )
            await _require(s, Home, body.home_id, "home_id", "home")
            try:
                secret = await issue_device(
                    s,
                    device_id=body.id,
                    home_id=body.home_id,
                    kind=body.kind.value,
                    model=body.model,
                    now=datetime.now(UTC),
                )
            except ValueError as exc:
                raise _invalid(None, str(exc)) from None
            device = await s.get(Device, body.id)
            assert device is not None  # issue_device just flushed it
            return DeviceWithSecret(**DeviceOut.model_validate(device).model_dump(), secret=secret)

    @router.post(
        "/devices/{device_id}/rekey",
        response_model=DeviceWithSecret,
        tags=["devices"],
        dependencies=[Depends(ADMIN)],
    )
    async def rekey_device(p: Caller, device_id: str) -> DeviceWithSecret:
        """A new secret; the old one stops working at once (lost or leaked secrets)."""
        async with _tx(maker) as s:
            device = await load_device(s, p, device_id)
            secret = (await rekey_existing(s, [device.id], now=datetime.now(UTC)))[device.id]
            return DeviceWithSecret(**DeviceOut.model_validate(device).model_dump(), secret=secret)

    @router.patch(
        "/devices/{device_id}",
        response_model=DeviceOut,
        tags=["devices"],
        dependencies=[Depends(ADMIN_OR_OPERATOR)],
    )
    async def patch_device(p: Caller, device_id: str, patch: DevicePatch) -> DeviceOut:
        """Operators may switch a device off (a false-alarming sensor at 3 a.m.) or on."""
        changes = patch.model_dump(exclude_unset=True)
        async with _tx(maker) as s:
            device = await load_device(s, p, device_id)
            _operator_may_only(p, changes, OPERATOR_DEVICE_FIELDS)
            for name, value in changes.items():
                if value is None:
                    raise _invalid(name, f"{name} cannot be null")
                setattr(device, name, value)
            await s.flush()
            return DeviceOut.model_validate(device)

    @router.delete("/devices/{device_id}", status_code=204, tags=["devices"], dependencies=[Depends(ADMIN)])
    async def delete_device(p: Caller, device_id: str) -> Response:
        async with _tx(maker) as s:
            device = await load_device(s, p, device_id)
            events = await _count(s, select(DeviceEvent.id).where(DeviceEvent.device_id == device_id))
            if events:
                raise _conflict(
                    f"device {device_id!r} has {events} stored event(s); disable it instead "
                    "(PATCH enabled=false) so its history stays"
                )
            await s.delete(device)
        return Response(status_code=204)

    # ------------------------------------------------------------------ users (admin)

    users = APIRouter(prefix="/users", tags=["users"], dependencies=[Depends(ADMIN)])

    async def check_user_refs(
        s: AsyncSession, role: Role, station_id: str | None, staff_id: str | None
    ) -> None:
        if station_id is None and role is not Role.admin:
            raise _invalid("station_id", f"a {role.value} needs station_id (it defines their scope)")
        if station_id is not None:
            await _require(s, Station, station_id, "station_id", "station")
        if staff_id is not None:
            await _require(s, Staff, staff_id, "staff_id", "staff member")

    async def other_active_admins(s: AsyncSession, user_id: int) -> int:
        return await _count(
            s,
            select(User.id).where(User.role == Role.admin.value, User.active.is_(True), User.id != user_id),
        )

    @users.get("", response_model=Page[UserOut])
    async def list_users(
        limit: Limit = 100, offset: Offset = 0, station_id: StationFilter = None
    ) -> Page[UserOut]:
        async with maker() as s:
            stmt = select(User).order_by(User.id)
            if station_id is not None:
                stmt = stmt.where(User.station_id.in_(await station_subtree(s, station_id)))
            return await _page(s, stmt, UserOut, limit, offset)

    @users.get("/{user_id}", response_model=UserOut)
    async def get_user(user_id: int) -> UserOut:
        async with maker() as s:
            user = await s.get(User, user_id)
        if user is None:
            raise _not_found("user", user_id)
        return UserOut.model_validate(user)

    @users.post("", response_model=UserOut, status_code=201)
    async def add_user(body: UserCreate) -> UserOut:
        async with _tx(maker) as s:
            await check_user_refs(s, body.role, body.station_id, body.staff_id)
            try:
                user = await create_user(
                    s,
                    username=body.username,
                    password=body.password,
                    role=body.role,
                    station_id=body.station_id,
                    display_name=body.display_name,
                    staff_id=body.staff_id,
                    now=datetime.now(UTC),
                )
            except DuplicateUsername as exc:
                raise _conflict(str(exc)) from None
            except ValueError as exc:
                raise _invalid(None, str(exc)) from None
            if body.locale is not None:
                user.locale = body.locale
                await s.flush()
            return UserOut.model_validate(user)

    @users.patch("/{user_id}", response_model=UserOut)
    async def patch_user(user_id: int, patch: UserPatch) -> UserOut:
        changes = patch.model_dump(exclude_unset=True)
        for name in ("password", "role", "active", "locale", "display_name"):
            if name in changes and changes[name] is None:
                raise _invalid(name, f"{name} cannot be null")
        async with _tx(maker) as s:
            user = await s.get(User, user_id)
            if user is None:
                raise _not_found("user", user_id)
            role = Role(changes.get("role", user.role))
            station_id = changes.get("station_id", user.station_id)
            staff_id = changes.get("staff_id", user.staff_id)
            await check_user_refs(s, role, station_id, staff_id)
            active = changes.get("active", user.active)
            was_admin = user.role == Role.admin.value and user.active
            if was_admin and (role is not Role.admin or not active):
                if not await other_active_admins(s, user.id):
                    raise _conflict("this is the last active admin; make another admin first")
            if "password" in changes:
                user.password_hash = await asyncio.to_thread(hash_password, changes.pop("password"))
            changes["role"] = role.value
            for name, value in changes.items():
                setattr(user, name, value)
            await s.flush()
            return UserOut.model_validate(user)

    @users.delete("/{user_id}", status_code=204)
    async def delete_user(user_id: int) -> Response:
        """Deleting a login never touches the audit log (it names actors as text)."""
        async with _tx(maker) as s:
            user = await s.get(User, user_id)
            if user is None:
                raise _not_found("user", user_id)
            if user.role == Role.admin.value and user.active and not await other_active_admins(s, user.id):
                raise _conflict("this is the last active admin; make another admin first")
            await s.delete(user)
        return Response(status_code=204)

    router.include_router(users)
    return router
