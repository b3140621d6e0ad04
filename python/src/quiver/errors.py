"""Exceptions raised by the Quiver client, each with the gRPC status code and the server's words."""

from __future__ import annotations

import grpc


class QuiverError(Exception):
    """A call that the server refused or that did not complete.

    `code` is the gRPC status code; `message` is what the server (or the transport) said,
    naming what was wrong and where.
    """

    def __init__(self, code: grpc.StatusCode, message: str, *, method: str = "") -> None:
        self.code = code
        self.message = message
        self.method = method
        where = f"{method}: " if method else ""
        super().__init__(f"{where}{code.name}: {message}")


class InvalidArgumentError(QuiverError):
    """The request is malformed or over the server's limits (INVALID_ARGUMENT, OUT_OF_RANGE)."""


class NotFoundError(QuiverError):
    """An unknown feature service, feature view or feature (NOT_FOUND)."""


class UnauthenticatedError(QuiverError):
    """The call carried no valid credentials (UNAUTHENTICATED)."""


class PermissionDeniedError(QuiverError):
    """The caller may not do this (PERMISSION_DENIED)."""


class DeadlineExceededError(QuiverError):
    """The call's deadline passed before the server answered (DEADLINE_EXCEEDED)."""


class ResourceExhaustedError(QuiverError):
    """The server shed the call: too many in flight, or a rate limit (RESOURCE_EXHAUSTED)."""


class UnavailableError(QuiverError):
    """The server or its online store cannot answer now; retrying later may work (UNAVAILABLE)."""


_BY_CODE: dict[grpc.StatusCode, type[QuiverError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}


def from_status(code: grpc.StatusCode, message: str, method: str) -> QuiverError:
    """The exception for a call of `method` that ended with `code` and `message`."""
    return _BY_CODE.get(code, QuiverError)(code, message, method=method)
