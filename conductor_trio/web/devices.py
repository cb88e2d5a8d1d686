"""Pairing and device routes (issue 25): how a phone gets and loses its device token.

=======  ===============================  =====================================================
POST     ``/v1/system/pairings``          a pairing code and its URL (``conductor pair``);
                                          who may: as ``/v1/system/*`` writes
POST     ``/v1/pair``                     ``{code}`` → a device and its token (the code is the
                                          credential: once, 5 minutes, rate-limited)
GET      ``/v1/devices/me``               the device whose token is presented ("this device")
DELETE   ``/v1/devices/me``               forget this device (revokes its own token)
GET      ``/v1/system/devices``           every device; who may: as ``/v1/system/*`` writes
DELETE   ``/v1/system/devices/{id}``      revoke a device: refused at once, its relay
                                          websockets closed (``conductor devices --revoke``)
=======  ===============================  =====================================================

Host, Origin and JSON-only POSTs are the caller guard's, as everywhere.
"""

from __future__ import annotations

from quart import Response, request
from quart_trio import QuartTrio

from codexd_trio.web.callers import Refusal
from codexd_trio.web.envelope import decode_body, envelope, error
from conductor_trio.auth.devices import Scope, device_info
from conductor_trio.auth.pairing import PairingRefused
from conductor_trio.contracts import (
    DeviceList,
    OneDevice,
    PairedDevice,
    PairingCode,
    PairingRequest,
    PairRequest,
)
from conductor_trio.service import Conductor
from conductor_trio.web.access import (
    Caller,
    device_access,
    request_address,
    shared_token_refusal,
)

__all__ = ["install_device_routes"]


def _caller() -> Caller:
    return Caller(method=request.method, authorization=request.headers.get("Authorization"),
                  remote_addr=request_address(request.remote_addr, request.headers))


def _refused(refusal: Refusal) -> Response:
    return error(refusal.status, refusal.code, refusal.message, refusal.details)


async def _body(type_: type[object]) -> object:
    raw = await request.get_data(cache=False, as_text=False)
    assert isinstance(raw, bytes)
    return decode_body(raw, type_)


def install_device_routes(app: QuartTrio, conductor: Conductor) -> None:
    cfg = conductor.config
    auth = conductor.auth

    def system_refusal() -> Response | None:
        refusal = shared_token_refusal(cfg, _caller(), auth.devices)
        return _refused(refusal) if refusal is not None else None

    @app.post("/v1/system/pairings")
    async def create_pairing() -> Response:
        if denied := system_refusal():
            return denied
        raw = await request.get_data(cache=False, as_text=False)
        assert isinstance(raw, bytes)
        body = decode_body(raw, PairingRequest) if raw.strip() else PairingRequest()
        scopes: list[Scope] = ["codex", *body.grant]
        code, ttl = auth.pairing.create(body.name, scopes)
        url = f"{conductor.link_base().rstrip('/')}/console#pair={code}"
        return envelope(PairingCode(code=code, url=url, expires_in_s=ttl, name=body.name,
                                    scopes=list(scopes)), 201)

    @app.post("/v1/pair")
    async def pair() -> Response:
        body = await _body(PairRequest)
        assert isinstance(body, PairRequest)
        try:
            pending = auth.pairing.redeem(body.code)
        except PairingRefused as exc:
            return error(exc.status, exc.code, exc.message, dict(exc.details))
        device, token = await auth.devices.add(body.name or pending.name, pending.scopes)
        return envelope(PairedDevice(device=device_info(device), token=token), 201)

    async def me() -> tuple[Response | None, str | None]:
        device, refusal = device_access(auth.devices, _caller())
        if refusal is not None:
            return _refused(refusal), None
        if device is None:
            return error(401, "unauthorized", "No device token: pair this device with "
                         "`conductor pair`.", {"reason": "no_device_token"}), None
        return None, device.id

    @app.get("/v1/devices/me")
    async def this_device() -> Response:
        refused, device_id = await me()
        if refused is not None or device_id is None:
            return refused or error(401, "unauthorized", "No device token.")
        device = auth.devices.get(device_id)
        assert device is not None
        return envelope(OneDevice(device=device_info(device)))

    @app.delete("/v1/devices/me")
    async def forget_this_device() -> Response:
        refused, device_id = await me()
        if refused is not None or device_id is None:
            return refused or error(401, "unauthorized", "No device token.")
        device = await auth.revoke(device_id)
        assert device is not None
        return envelope(OneDevice(device=device_info(device)))

    @app.get("/v1/system/devices")
    async def list_devices() -> Response:
        if denied := system_refusal():
            return denied
        return envelope(DeviceList(devices=[device_info(d) for d in auth.devices.all()]))

    @app.delete("/v1/system/devices/<device_id>")
    async def revoke_device(device_id: str) -> Response:
        if denied := system_refusal():
            return denied
        device = await auth.revoke(device_id)
        if device is None:
            return error(404, "not_found", f"No device {device_id!r}.", {"deviceId": device_id})
        return envelope(OneDevice(device=device_info(device)))
