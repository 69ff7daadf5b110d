"""The on-disk contracts: the one transfer-value record (schemas.record), the run layout
(schemas.run) and the exported model (schemas.serving)."""

from schemas.record import (
    FIELDS,
    SCHEMA_VERSION,
    Field,
    arrow_schema,
    from_arrow_row,
    metadata_schema,
    parse_tf_example,
    tf_feature_spec,
    to_tf_example,
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
