"""`Client` (blocking) and `AsyncClient` (asyncio): Quiver's FeatureService from Python."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, cast

import grpc
import grpc.aio

from quiver._catalog import FeatureService, FeatureView, WriteResult, key_types_of
from quiver._requests import Rows, ValueFormat, entity_columns, online_request, write_request
from quiver._response import FeatureColumn, OnlineFeatures
from quiver._types import Scalar
from quiver._values import Key
from quiver.errors import NotFoundError, from_status
from quiver.v1 import feature_service_pb2 as pb
from quiver.v1 import feature_service_pb2_grpc as rpc

_Self = TypeVar("_Self", bound="_Base")
_Reply = TypeVar("_Reply")

#: Largest reply accepted: gRPC's default of 4 MiB is less than a large call can answer.
DEFAULT_MAX_REPLY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Tls:
    """How to reach a server over TLS. All fields are PEM bytes.

    Without `root_certificates` the system's trusted roots check the server. `certificate_chain`
    and `private_key` are the client's own certificate, for servers that ask for one (mutual
    TLS). `server_name` overrides the name checked in the server's certificate.
    """

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


def _target(url: str, tls: Tls | bool | None) -> tuple[str, Tls | None]:
    """The gRPC target of `url` and the TLS settings: "https://" turns TLS on by default."""
    scheme, _, rest = url.rpartition("://")
    if scheme not in ("", "http", "https", "grpc", "grpcs"):
        raise ValueError(f"`{url}` is not a server address such as http://127.0.0.1:50051")
    target = rest.rstrip("/")
    if not target:
        raise ValueError(f"`{url}` names no host")
    secure = scheme in ("https", "grpcs") if tls is None else bool(tls)
    if not secure:
        return target, None
    return target, tls if isinstance(tls, Tls) else Tls()


class _Base:
    """What both clients share: the channel's settings, credentials, and the catalog cache."""

    def __init__(
        self,
        url: str = "127.0.0.1:50051",
        *,
        token: str | None = None,
        tls: Tls | bool | None = None,
        timeout: float = 5.0,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._target, self._tls = _target(url, tls)
        self._options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_reply_bytes),
        ]
        if self._tls is not None and self._tls.server_name:
            self._options.append(("grpc.ssl_target_name_override", self._tls.server_name))
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self._views: list[FeatureView] = []
        self._known_key_types: dict[str, Scalar] = {}
        self._connect()

    def _connect(self) -> None:
        """Opens `self._channel` and `self._stub`: blocking or asyncio, by subclass."""
        raise NotImplementedError

    def _timeout(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def _remember(self, reply: pb.ListFeatureViewsResponse) -> list[FeatureView]:
        self._views = [FeatureView.from_wire(info) for info in reply.feature_views]
        self._known_key_types = key_types_of(self._views)
        return self._views

    def _view(self, view_ref: str) -> FeatureView | None:
        name = view_ref.partition("@")[0]
        return next((view for view in self._views if view.name == name), None)

    def _needs_catalog(self, columns: Mapping[str, Sequence[Key]]) -> bool:
        """Whether a read must learn key types first: int keys are int64 or int32 by view."""
        return any(
            name not in self._known_key_types and bool(keys) and isinstance(keys[0], int)
            for name, keys in columns.items()
        )


def _unknown_view(view_ref: str) -> NotFoundError:
    return NotFoundError(
        grpc.StatusCode.NOT_FOUND,
        f"feature view `{view_ref}` is not among the server's feature views",
        method="WriteFeatures",
    )


def _online(reply: pb.GetOnlineFeaturesResponse, columns: dict[str, list[Key]]) -> OnlineFeatures:
    rows = len(next(iter(columns.values())))
    moments: dict[int, datetime] = {}
    features = [FeatureColumn.from_wire(c, rows, moments) for c in reply.features]
    return OnlineFeatures(columns, features)


class Client(_Base):
    """A blocking client of one Quiver server.

    `url` is "host:port", "http://host:port", or "https://host:port" for TLS. `token` is sent
    as a bearer token on every call. `timeout` is each call's deadline in seconds, unless the
    call gives its own. Errors are `quiver.errors.QuiverError`s carrying the gRPC code.
    Use it as a context manager, or call `close()`.
    """

    def _connect(self) -> None:
        if self._tls is None:
            self._channel = grpc.insecure_channel(self._target, options=self._options)
        else:
            credentials = self._tls.credentials()
            self._channel = grpc.secure_channel(self._target, credentials, options=self._options)
        self._stub = rpc.FeatureServiceStub(self._channel)

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection; calls in flight are cancelled."""
        self._channel.close()

    def get_online_features(
        self,
        features: Sequence[str] | None = None,
        *,
        service: str | None = None,
        entities: Mapping[str, Sequence[Key]] | None = None,
        entity_rows: Sequence[Mapping[str, Key]] | None = None,
        value_format: ValueFormat = "typed",
        timeout: float | None = None,
    ) -> OnlineFeatures:
        """The current value, status and event time of each feature for each entity row.

        Name the features as "view:feature" references or by a feature `service`; give the
        keys as columns (`entities={"user_id": [42, 7]}`) or rows (`entity_rows=[{...}]`).
        """
        columns = entity_columns(entities, entity_rows)
        if self._needs_catalog(columns):
            self._load_views(timeout)
        request = online_request(features, service, columns, self._known_key_types, value_format)
        reply = self._call(self._stub.GetOnlineFeatures, "GetOnlineFeatures", request, timeout)
        return _online(reply, columns)

    def write_features(
        self,
        feature_view: str,
        rows: Rows,
        *,
        event_time_column: str = "event_time",
        timeout: float | None = None,
    ) -> WriteResult:
        """Upserts rows of `feature_view` ("view" or "view@2"): each row maps the entity's key
        fields, some of the view's features, and `event_time_column` (a datetime, naive ones
        taken as UTC, or microseconds) to values. Values are encoded by their declared types."""
        view = self._view(feature_view)
        if view is None:
            self._load_views(timeout)
            view = self._view(feature_view)
        if view is None:
            raise _unknown_view(feature_view)
        request = write_request(view, feature_view, rows, event_time_column)
        reply = self._call(self._stub.WriteFeatures, "WriteFeatures", request, timeout)
        return WriteResult.from_wire(reply)

    def list_feature_views(self, *, timeout: float | None = None) -> list[FeatureView]:
        """The latest version of every applied feature view, by name."""
        return list(self._load_views(timeout))

    def list_feature_services(self, *, timeout: float | None = None) -> list[FeatureService]:
        """Every applied feature service, by name."""
        request = pb.ListFeatureServicesRequest()
        reply = self._call(self._stub.ListFeatureServices, "ListFeatureServices", request, timeout)
        return [FeatureService.from_wire(info) for info in reply.feature_services]

    def _load_views(self, timeout: float | None) -> list[FeatureView]:
        request = pb.ListFeatureViewsRequest()
        reply = self._call(self._stub.ListFeatureViews, "ListFeatureViews", request, timeout)
        return self._remember(reply)

    def _call(
        self,
        method: grpc.UnaryUnaryMultiCallable[Any, _Reply],
        name: str,
        request: object,
        timeout: float | None,
    ) -> _Reply:
        try:
            return method(request, timeout=self._timeout(timeout), metadata=self._metadata)
        except grpc.RpcError as error:
            call = cast(grpc.Call, error)
            raise from_status(call.code(), call.details() or "", name) from None


class AsyncClient(_Base):
    """The asyncio twin of `Client`, on grpc.aio: the same methods, awaited.

    Use it as an async context manager, or await `close()`.
    """

    def _connect(self) -> None:
        if self._tls is None:
            self._channel = grpc.aio.insecure_channel(self._target, options=self._options)
        else:
            credentials = self._tls.credentials()
            self._channel = grpc.aio.secure_channel(
                self._target, credentials, options=self._options
            )
        self._stub = rpc.FeatureServiceStub(self._channel)

    async def __aenter__(self: _Self) -> _Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the connection; calls in flight are cancelled."""
        await self._channel.close()

    async def get_online_features(
        self,
        features: Sequence[str] | None = None,
        *,
        service: str | None = None,
        entities: Mapping[str, Sequence[Key]] | None = None,
        entity_rows: Sequence[Mapping[str, Key]] | None = None,
        value_format: ValueFormat = "typed",
        timeout: float | None = None,
    ) -> OnlineFeatures:
        """As `Client.get_online_features`."""
        columns = entity_columns(entities, entity_rows)
        if self._needs_catalog(columns):
            await self._load_views(timeout)
        request = online_request(features, service, columns, self._known_key_types, value_format)
        reply = await self._call(
            self._stub.GetOnlineFeatures, "GetOnlineFeatures", request, timeout
        )
        return _online(reply, columns)

    async def write_features(
        self,
        feature_view: str,
        rows: Rows,
        *,
        event_time_column: str = "event_time",
        timeout: float | None = None,
    ) -> WriteResult:
        """As `Client.write_features`."""
        view = self._view(feature_view)
        if view is None:
            await self._load_views(timeout)
            view = self._view(feature_view)
        if view is None:
            raise _unknown_view(feature_view)
        request = write_request(view, feature_view, rows, event_time_column)
        reply = await self._call(self._stub.WriteFeatures, "WriteFeatures", request, timeout)
        return WriteResult.from_wire(reply)

    async def list_feature_views(self, *, timeout: float | None = None) -> list[FeatureView]:
        """As `Client.list_feature_views`."""
        return list(await self._load_views(timeout))

    async def list_feature_services(self, *, timeout: float | None = None) -> list[FeatureService]:
        """As `Client.list_feature_services`."""
        request = pb.ListFeatureServicesRequest()
        reply = await self._call(
            self._stub.ListFeatureServices, "ListFeatureServices", request, timeout
        )
        return [FeatureService.from_wire(info) for info in reply.feature_services]

    async def _load_views(self, timeout: float | None) -> list[FeatureView]:
        request = pb.ListFeatureViewsRequest()
        reply = await self._call(self._stub.ListFeatureViews, "ListFeatureViews", request, timeout)
        return self._remember(reply)

    async def _call(
        self,
        method: Any,
        name: str,
        request: object,
        timeout: float | None,
    ) -> Any:
        try:
            return await method(request, timeout=self._timeout(timeout), metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise from_status(error.code(), error.details() or "", name) from None
