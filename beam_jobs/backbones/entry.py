"""What a backbone entry is and what its contract SavedModel carries: the signature's names and
the metadata file beside it. The registry (beam_jobs.backbones) and each loader module share it."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

SIGNATURE_INPUT = "images"
SIGNATURE_OUTPUT = "transfer_values"
METADATA_FILE = "backbone.json"  # stored in the SavedModel's assets.extra/


@dataclasses.dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone: how to build its contract SavedModel, and what it promises."""

    name: str
    image_size: int
    feature_dim: int
    version: str  # bump when weights or preprocessing change; part of the fingerprint and cache key
    export: Callable[[str], None]  # writes the contract SavedModel into an empty directory


def write_metadata(export_dir: str, name: str, image_size: int, feature_dim: int,
                   fingerprint: str) -> None:
    extra = os.path.join(export_dir, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    with open(os.path.join(extra, METADATA_FILE), "w") as f:
        json.dump({"name": name, "image_size": image_size, "feature_dim": feature_dim,
                   "fingerprint": fingerprint}, f, indent=2)
