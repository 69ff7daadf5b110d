"""`--source=KIND:URI` → a PTransform yielding `SourceImage`s; one module per kind."""

from __future__ import annotations

from typing import Mapping, Optional

import apache_beam as beam

from beam_jobs.cli.errors import UserError
from beam_jobs.sources.base import KeepFirst, OnlyWanted, SourceConfig  # noqa: F401 - sources.X

KINDS = ("folder", "manifest", "tfrecord", "cifar10", "idx")


def config_from_options(opts, label_names: Optional[list[str]] = None) -> SourceConfig:
    """SourceConfig from the extract options (`--limit`, `--tfrecord_*_key`)."""
    def keys(text: Optional[str]) -> tuple[str, ...]:
        return tuple(k.strip() for k in (text or "").split(",") if k.strip())

    return SourceConfig(limit=parse_limit(opts.limit), label_names=label_names,
                        tfrecord_image_keys=keys(getattr(opts, "tfrecord_image_key", None)),
                        tfrecord_label_keys=keys(getattr(opts, "tfrecord_label_key", None)))


def parse_limit(text: Optional[str]) -> Mapping[str, int] | int | None:
    """`--limit=500` caps every part of the source; `--limit=train=5000,test=1000` caps by the
    source's own split names (the first N records, for demos and smoke tests)."""
    if not text:
        return None
    try:
        if "=" not in text:
            return int(text)
        return {k.strip(): int(v) for k, v in (part.split("=", 1) for part in text.split(","))}
    except ValueError:
        raise UserError(f"--limit={text} is not a number nor a list like "
                        f"train=5000,test=1000.") from None


def read_images(spec: str, limit=None, label_names: Optional[list[str]] = None,
                config: Optional[SourceConfig] = None) -> beam.PTransform:
    """Pick the source module for `KIND:URI`."""
    config = config or SourceConfig(limit=limit, label_names=label_names)
    kind, sep, uri = spec.partition(":")
    if not sep or not uri:
        raise UserError(f"--source={spec} must look like KIND:URI with KIND in {', '.join(KINDS)}.")
    if kind == "idx":
        from beam_jobs.sources.idx import ReadIdx

        return ReadIdx(uri, limit=config.limit, label_names=config.label_names)
    if kind == "folder":
        from beam_jobs.sources.folder import ReadFolder

        return ReadFolder(uri, limit=config.limit, uri_filter=config.uri_filter)
    if kind == "manifest":
        from beam_jobs.sources.manifest import ReadManifest

        return ReadManifest(uri, limit=config.limit, uri_filter=config.uri_filter)
    if kind == "tfrecord":
        from beam_jobs.sources.tfrecord import ReadTFRecord

        return ReadTFRecord(uri, config)
    if kind == "cifar10":
        from beam_jobs.sources.cifar10 import ReadCifar10

        return ReadCifar10(uri, limit=config.limit)
    raise UserError(f"Unknown source kind {kind!r}: use one of {', '.join(KINDS)}.")


def skipped_files(spec: str) -> beam.PTransform:
    """PBegin → one key per file the source saw but did not take as an input (`.txt`,
    `.DS_Store`…, see `folder.skipped_file_key`); only folders have such files."""
    kind, _, uri = spec.partition(":")
    if kind == "folder" and uri:
        from beam_jobs.sources.folder import SkippedFiles

        return SkippedFiles(uri)
    return beam.Create([]).with_output_types(str)
