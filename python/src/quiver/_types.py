"""Feature types as the definitions write them ("int64", "list<string>", "embedding<32>")."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Scalar(enum.Enum):
    """The scalar types a feature, a list element or an entity key can have."""

    BOOL = "bool"
    INT32 = "int32"
    INT64 = "int64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"
    BYTES = "bytes"
    TIMESTAMP = "timestamp"


class Shape(enum.Enum):
    """Whether a feature holds one scalar, a list of them, or an embedding of float32."""

    SCALAR = "scalar"
    LIST = "list"
    EMBEDDING = "embedding"


@dataclass(frozen=True)
class FeatureType:
    """A declared feature type; `scalar` is a list's element type (float32 for an embedding)."""

    shape: Shape
    scalar: Scalar
    dimension: int = 0

    @staticmethod
    def parse(text: str) -> FeatureType:
        """The type written `text`, as the server's ListFeatureViews spells it."""
        if text.startswith("list<") and text.endswith(">"):
            return FeatureType(Shape.LIST, Scalar(text[len("list<") : -1]))
        if text.startswith("embedding<") and text.endswith(">"):
            dimension = int(text[len("embedding<") : -1])
            return FeatureType(Shape.EMBEDDING, Scalar.FLOAT32, dimension)
        return FeatureType(Shape.SCALAR, Scalar(text))

    def __str__(self) -> str:
        if self.shape is Shape.LIST:
            return f"list<{self.scalar.value}>"
        if self.shape is Shape.EMBEDDING:
            return f"embedding<{self.dimension}>"
        return self.scalar.value
