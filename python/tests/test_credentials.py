"""The client's TLS settings and bearer token reach the server. Quiver's server does not take
either yet, so the peer here is a gRPC server in the test that records what each call carried,
over TLS with a certificate made for the test."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

import quiver
from quiver.v1 import feature_service_pb2 as pb
from quiver.v1 import feature_service_pb2_grpc as rpc


class RecordingService(rpc.FeatureServiceServicer):
    """Answers ListFeatureViews with one view and keeps each call's metadata."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    def ListFeatureViews(
        self, request: pb.ListFeatureViewsRequest, context: grpc.ServicerContext
    ) -> pb.ListFeatureViewsResponse:
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
        view = pb.FeatureViewInfo(name="seen", key_fields=["user_id"], key_types=["int64"])
        return pb.ListFeatureViewsResponse(feature_views=[view])

    def GetOnlineFeatures(
        self, request: pb.GetOnlineFeaturesRequest, context: grpc.ServicerContext
    ) -> pb.GetOnlineFeaturesResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "these tests list feature views only")

    def ListFeatureServices(
        self, request: pb.ListFeatureServicesRequest, context: grpc.ServicerContext
    ) -> pb.ListFeatureServicesResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "these tests list feature views only")

    def WriteFeatures(
        self, request: pb.WriteFeaturesRequest, context: grpc.ServicerContext
    ) -> pb.WriteFeaturesResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "these tests list feature views only")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """A self-signed certificate for localhost and its key, in PEM."""
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert.read_bytes(), key.read_bytes()


@pytest.fixture
def tls_server(certificate: tuple[bytes, bytes]) -> Iterator[tuple[RecordingService, int]]:
    cert, key = certificate
    service = RecordingService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    rpc.add_FeatureServiceServicer_to_server(service, server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    server.start()
    yield service, port
    server.stop(grace=None)


def test_a_token_is_sent_as_a_bearer_token_over_tls(
    tls_server: tuple[RecordingService, int], certificate: tuple[bytes, bytes]
) -> None:
    service, port = tls_server
    tls = quiver.Tls(root_certificates=certificate[0], server_name="localhost")
    with quiver.Client(f"https://127.0.0.1:{port}", token="s3cret", tls=tls) as client:
        views = client.list_feature_views()
    assert [view.name for view in views] == ["seen"]
    assert service.metadata[-1]["authorization"] == "Bearer s3cret"


async def test_the_async_client_sends_the_token_over_tls_too(
    tls_server: tuple[RecordingService, int], certificate: tuple[bytes, bytes]
) -> None:
    service, port = tls_server
    tls = quiver.Tls(root_certificates=certificate[0], server_name="localhost")
    async with quiver.AsyncClient(f"127.0.0.1:{port}", token="t0ken", tls=tls) as client:
        views = await client.list_feature_views()
    assert views[0].keys == {"user_id": "int64"}
    assert service.metadata[-1]["authorization"] == "Bearer t0ken"


def test_a_server_whose_certificate_is_not_trusted_is_unavailable(
    tls_server: tuple[RecordingService, int],
) -> None:
    _, port = tls_server
    with quiver.Client(f"https://127.0.0.1:{port}", timeout=5.0) as client:
        with pytest.raises(quiver.UnavailableError):
            client.list_feature_views()


def test_no_token_sends_no_authorization(
    tls_server: tuple[RecordingService, int], certificate: tuple[bytes, bytes]
) -> None:
    service, port = tls_server
    tls = quiver.Tls(root_certificates=certificate[0], server_name="localhost")
    with quiver.Client(f"127.0.0.1:{port}", tls=tls) as client:
        client.list_feature_views()
    assert "authorization" not in service.metadata[-1]


def test_plaintext_to_a_tls_server_fails_clearly(tls_server: tuple[RecordingService, int]) -> None:
    _, port = tls_server
    with quiver.Client(f"http://127.0.0.1:{port}", timeout=5.0) as client:
        with pytest.raises(quiver.UnavailableError):
            client.list_feature_views()
