"""Envelopes and stream frames."""

from __future__ import annotations

from typing import Any

import msgspec


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class ErrorEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool = False
    error: ErrorBody


class HelloData(msgspec.Struct, frozen=True, kw_only=True):
    lastSeq: int
    replayFrom: int


class OverflowData(msgspec.Struct, frozen=True, kw_only=True):
    lastDeliveredSeq: int


class HelloFrame(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="hello"):
    data: HelloData


class OverflowFrame(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="overflow"):
    data: OverflowData
