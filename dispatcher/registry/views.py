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

The five kinds of records share one pattern (``dispatcher.registry.crud``): each is a
``CrudSpec`` below; only what no other kind has (a device's secret, a resident's contact
list) is written out here. User accounts are in ``dispatcher.registry.user_views``.
"""

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends

from carecall.core.bus import Bus
from device_gateway.broker_sync import install_issued_secret
from device_gateway.changes import announce_devices
from dispatcher.auth.principals import Principal, current_principal
from dispatcher.auth.privacy import mask_number, redact_resident, sees_health_data
from dispatcher.auth.tokens import TokenSigner
from dispatcher.registry import records
from dispatcher.registry.crud import (
    ADMIN,
    ADMIN_OR_OPERATOR,
    Changed,
    CrudSpec,
    Maker,
    add_crud_routes,
    conflict,
    invalid,
    load,
    no_nulls,
    transaction,
    validated_patch,
)
from dispatcher.registry.import_views import import_router
from dispatcher.registry.payloads import (
    DeviceCreate,
    DeviceOut,
    DevicePatch,
    DeviceWithSecret,
    HomeOut,
    HomePatch,
    ResidentOut,
    ResidentPatch,
    StaffOut,
    StaffPatch,
    StationOut,
    StationPatch,
)
from dispatcher.registry.records import Kind
from dispatcher.registry.schemas import MAX_CONTACTS, ContactRow, HomeRow, ResidentRow, StaffRow, StationRow
from dispatcher.registry.service import get_device, issue_device, rekey_existing
from dispatcher.registry.user_views import users_router

# Fields an operator may change (everything else needs an admin).
OPERATOR_STAFF_FIELDS = frozenset({"on_duty"})
OPERATOR_DEVICE_FIELDS = frozenset({"enabled"})


def _rederive_tier(merged: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    if "kind" in changes and "tier" not in changes:
        return merged | {"tier": None}  # the row model derives it from the new kind
    return merged


def _without_contacts(merged: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    # contacts change through PUT .../contacts
    return {name: value for name, value in merged.items() if name != "contacts"}


def _for_role(p: Principal, resident: ResidentOut) -> ResidentOut:
    """Supervisors get no health data and no relatives' phone numbers (dispatcher.auth.privacy)."""
    if sees_health_data(p):
        return resident
    shown = redact_resident(resident.model_dump())
    # the hand-off facts are health data; the mobile is a personal number
    shown |= {"medications": "", "allergies": "", "access_notes": "", "phone": mask_number(resident.phone)}
    return ResidentOut.model_validate(shown)


STATIONS = CrudSpec(
    kind=Kind.stations,
    name="station",
    out=StationOut,
    create=StationRow,
    patch=StationPatch,
    patcher=validated_patch(StationRow, adjust=_rederive_tier, write_all=True),
)
STAFF = CrudSpec(
    kind=Kind.staff,
    name="staff",
    out=StaffOut,
    create=StaffRow,
    patch=StaffPatch,
    patcher=validated_patch(StaffRow),
    patch_role=ADMIN_OR_OPERATOR,
    operator_fields=OPERATOR_STAFF_FIELDS,
)
HOMES = CrudSpec(
    kind=Kind.homes,
    name="home",
    out=HomeOut,
    create=HomeRow,
    patch=HomePatch,
    patcher=validated_patch(HomeRow),
)
RESIDENTS = CrudSpec(
    kind=Kind.residents,
    name="resident",
    out=ResidentOut,
    create=ResidentRow,
    patch=ResidentPatch,
    patcher=validated_patch(ResidentRow, adjust=_without_contacts),
    home_filter=True,
    records_reads=True,
    present=_for_role,
)


def devices_spec(on_change: Changed) -> CrudSpec[DeviceOut]:
    """Devices are created and re-keyed by their own routes (a secret is issued once)."""
    return CrudSpec(
        kind=Kind.devices,
        name="device",
        out=DeviceOut,
        create=None,
        patch=DevicePatch,
        patcher=no_nulls,
        patch_role=ADMIN_OR_OPERATOR,
        operator_fields=OPERATOR_DEVICE_FIELDS,
        home_filter=True,
        on_change=on_change,
        patch_doc="Operators may switch a device off (a false-alarming sensor at 3 a.m.) or on.",
    )


def registry_router(
    maker: Maker, signer: TokenSigner, bus: Bus | None = None, *, broker_admin_url: str | None = None
) -> APIRouter:
    """All registry and user endpoints under ``/api/v1``; every one needs a bearer token.

    A device created, re-keyed, changed or deleted is announced on ``bus`` (channel
    ``devices``) after the commit, so gateways and the broker act on it at once."""
    principal_dep = current_principal(maker, signer)
    router = APIRouter(prefix="/api/v1", dependencies=[Depends(principal_dep)])

    async def announce(p: Principal, device_ids: list[str]) -> None:
        await announce_devices(bus, device_ids, by=p.username)

    kinds: tuple[CrudSpec[Any], ...] = (STATIONS, STAFF, HOMES, RESIDENTS)
    for spec in kinds:
        add_crud_routes(router, spec, maker=maker, caller=principal_dep)
    router.include_router(contacts_router(maker, principal_dep))
    devices = devices_spec(announce)
    add_crud_routes(router, devices, maker=maker, caller=principal_dep)
    router.include_router(device_secrets_router(maker, principal_dep, devices, broker_admin_url))
    router.include_router(users_router(maker))
    router.include_router(import_router(maker, bus))
    return router


def contacts_router(maker: Maker, caller: Any) -> APIRouter:
    Caller = Annotated[Principal, Depends(caller)]
    router = APIRouter(tags=["residents"])

    @router.put(
        "/residents/{resident_id}/contacts",
        response_model=ResidentOut,
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
            raise invalid(None, "two contacts share a priority; each needs its own place in the order")
        async with transaction(maker) as s:
            resident = await load(s, RESIDENTS, p, resident_id)
            # a client that does not know channels (the console's editor) keeps each
            # contact's own order: same name and phone, same channels
            kept = {(c.name, c.phone): c.channels for c in resident.contacts}
            contacts = [
                c
                if "channels" in c.model_fields_set
                else c.model_copy(update={"channels": kept.get((c.name, c.phone), "")})
                for c in contacts
            ]
            await records.replace_contacts(s, resident=resident, contacts=contacts)
            return ResidentOut.model_validate(resident)

    return router


def device_secrets_router(
    maker: Maker, caller: Any, devices: CrudSpec[DeviceOut], broker_admin_url: str | None
) -> APIRouter:
    """Creating a device and re-keying one: the only answers that carry a secret."""
    Caller = Annotated[Principal, Depends(caller)]
    router = APIRouter(tags=["devices"], dependencies=[Depends(ADMIN)])

    async def installed(p: Principal, out: DeviceWithSecret) -> DeviceWithSecret:
        # the broker takes the secret first (dynsec needs the plaintext), then the gateways
        # and any broker sync reload the device (a gateway may cache it as unknown)
        out.broker_error = await install_issued_secret(maker, broker_admin_url, out.id, out.secret)
        assert devices.on_change is not None
        await devices.on_change(p, [out.id])
        return out

    @router.post("/devices", response_model=DeviceWithSecret, status_code=201)
    async def create_device(p: Caller, body: DeviceCreate) -> DeviceWithSecret:
        async with transaction(maker) as s:
            if await records.exists(s, kind=Kind.devices, ident=body.id):
                # issue_device would silently re-key it; a new secret must be asked for.
                raise conflict(
                    f"device {body.id!r} already exists; POST /api/v1/devices/{body.id}/rekey "
                    "for a new secret"
                )
            await records.check_links(s, kind=Kind.devices, row=body, current=None)
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
                raise invalid(None, str(exc)) from None
            device = await get_device(s, device_id=body.id)
            assert device is not None  # issue_device just flushed it
            out = DeviceWithSecret(**DeviceOut.model_validate(device).model_dump(), secret=secret)
        return await installed(p, out)

    @router.post("/devices/{device_id}/rekey", response_model=DeviceWithSecret)
    async def rekey_device(p: Caller, device_id: str) -> DeviceWithSecret:
        """A new secret; the old one stops working at once (lost or leaked secrets)."""
        async with transaction(maker) as s:
            device = await load(s, devices, p, device_id)
            secret = (await rekey_existing(s, device_ids=[device.id], now=datetime.now(UTC)))[device.id]
            out = DeviceWithSecret(**DeviceOut.model_validate(device).model_dump(), secret=secret)
        return await installed(p, out)

    return router
