"""Quiver's Python client: online features from a Quiver server, for notebooks and services.

import quiver

with quiver.Client("127.0.0.1:50051") as client:
    features = client.get_online_features(service="ranker_v1", entities={"user_id": [42, 7]})
    frame = features.to_pandas()
"""

from quiver._catalog import Feature, FeatureService, FeatureView, IgnoredRow, WriteResult
from quiver._client import AsyncClient, Client, Tls
from quiver._historical import HistoricalError, historical_features
from quiver._requests import Rows, ValueFormat
from quiver._response import FeatureColumn, FeatureStatus, OnlineFeatures
from quiver._types import FeatureType, Scalar, Shape
from quiver.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    QuiverError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "DeadlineExceededError",
    "Feature",
    "FeatureColumn",
    "FeatureService",
    "FeatureStatus",
    "FeatureType",
    "FeatureView",
    "HistoricalError",
    "IgnoredRow",
    "InvalidArgumentError",
    "NotFoundError",
    "OnlineFeatures",
    "PermissionDeniedError",
    "QuiverError",
    "ResourceExhaustedError",
    "Rows",
    "Scalar",
    "Shape",
    "Tls",
    "UnauthenticatedError",
    "UnavailableError",
    "ValueFormat",
    "WriteResult",
    "historical_features",
]
