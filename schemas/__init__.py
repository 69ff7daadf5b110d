"""The one definition of a transfer-value record and everything derived from it."""

from schemas.record import (
    FIELDS, SCHEMA_VERSION, Field, arrow_schema, from_arrow_row, metadata_schema, parse_tf_example, tf_feature_spec, to_tf_example,
)

__all__ = [
    "FIELDS",
    "SCHEMA_VERSION",
    "Field",
    "arrow_schema",
    "from_arrow_row",
    "metadata_schema",
    "parse_tf_example",
    "tf_feature_spec",
    "to_tf_example",
]
