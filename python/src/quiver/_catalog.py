"""What the server has applied: feature views with their keys and feature types, and feature
services; and what a push changed."""

from __future__ import annotations

from dataclasses import dataclass

from quiver._types import FeatureType, Scalar
from quiver.v1 import feature_service_pb2 as pb


@dataclass(frozen=True)
class Feature:
    """One feature of a view; `type` as the definitions write it, such as "list<string>"."""

    name: str
    type: str
    description: str


@dataclass(frozen=True)
class FeatureView:
    """The latest applied version of a feature view."""

    name: str
    version: int
    entity: str
    #: The entity's key fields, in key order, with their types ("int64", "string", ...).
    keys: dict[str, str]
    #: Seconds a value stays valid after its event time; 0 is forever.
    ttl_seconds: int
    features: list[Feature]
    description: str

    @staticmethod
    def from_wire(info: pb.FeatureViewInfo) -> FeatureView:
        # A server older than key_types names the fields only; their types are then unknown.
        types = list(info.key_types) or [""] * len(info.key_fields)
        return FeatureView(
            name=info.name,
            version=info.version,
            entity=info.entity,
            keys=dict(zip(info.key_fields, types, strict=True)),
            ttl_seconds=info.ttl_seconds,
            features=[Feature(f.name, f.type, f.description) for f in info.features],
            description=info.description,
        )

    def feature_type(self, feature: str) -> FeatureType | None:
        """The declared type of `feature`, or None if the view has no such feature."""
        for candidate in self.features:
            if candidate.name == feature:
                return FeatureType.parse(candidate.type)
        return None

    def key_type(self, field: str) -> Scalar | None:
        """The type of key field `field`, or None if it is not one or the server did not say."""
        declared = self.keys.get(field)
        return Scalar(declared) if declared else None


@dataclass(frozen=True)
class FeatureService:
    """A feature service: its features as "view:feature" references, in reply order."""

    name: str
    features: list[str]
    description: str

    @staticmethod
    def from_wire(info: pb.FeatureServiceInfo) -> FeatureService:
        return FeatureService(info.name, list(info.features), info.description)


@dataclass(frozen=True)
class IgnoredRow:
    """A pushed row that changed nothing: `row` counts from 0, `reason` is "older_than_stored"
    or "expired", and `detail` says it in words."""

    row: int
    reason: str
    detail: str


@dataclass(frozen=True)
class WriteResult:
    """What `write_features` changed."""

    rows_written: int
    ignored_rows: list[IgnoredRow]

    @staticmethod
    def from_wire(reply: pb.WriteFeaturesResponse) -> WriteResult:
        ignored = [IgnoredRow(i.row, i.reason, i.detail) for i in reply.ignored_rows]
        return WriteResult(reply.rows_written, ignored)


def key_types_of(views: list[FeatureView]) -> dict[str, Scalar]:
    """Each key field name's type across `views`: what a request's key column must hold."""
    types: dict[str, Scalar] = {}
    for view in views:
        for field in view.keys:
            declared = view.key_type(field)
            if declared is not None:
                types.setdefault(field, declared)
    return types
