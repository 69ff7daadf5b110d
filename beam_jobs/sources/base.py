"""What every source module shares: the options a source takes besides its URI, and the two
filters applied to candidates before their bytes are read (wanted uris, the first N)."""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional

import apache_beam as beam


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """What a source needs besides its URI (from the extract options)."""

    limit: Mapping[str, int] | int | None = None
    label_names: Optional[list[str]] = None
    tfrecord_image_keys: tuple[str, ...] = ()
    tfrecord_label_keys: tuple[str, ...] = ()
    # Only inputs whose uri passes are wanted (one chunk of a job, see beam_jobs.extract.plan.chunks);
    # folder and manifest sources apply it before reading any bytes, others may ignore it.
    uri_filter: Optional[Callable[[str], bool]] = None


def _uri(image) -> str:
    return image.uri


def _split_key(image) -> str:
    return image.source_split or ""


class OnlyWanted(beam.PTransform):
    """Candidates (or images) whose uri passes `SourceConfig.uri_filter`; all when None."""

    def __init__(self, uri_filter: Optional[Callable[[str], bool]]):
        super().__init__()
        self._uri_filter = uri_filter

    def expand(self, items):
        if self._uri_filter is None:
            return items
        uri_filter = self._uri_filter
        return items | "ByUri" >> beam.Filter(lambda item: uri_filter(item.uri))


class KeepFirst(beam.PTransform):
    """The first N inputs by uri (a limited run is reproducible, not a random sample).

    An int caps everything; a mapping caps by the source's own split name, other splits pass.
    """

    def __init__(self, limit: Mapping[str, int] | int | None):
        super().__init__()
        self._limit = limit

    def expand(self, images):
        if self._limit is None:
            return images
        if isinstance(self._limit, int):
            return (images
                    | "Smallest" >> beam.combiners.Top.Smallest(self._limit, key=_uri)
                    | "Flatten" >> beam.FlatMap(lambda xs: xs))
        limits = dict(self._limit)
        capped, free = images | "ByCap" >> beam.Partition(
            lambda image, _: 0 if _split_key(image) in limits else 1, 2)
        kept = (capped
                | "Key" >> beam.Map(lambda image: (_split_key(image), image))
                | "SmallestPerSplit" >> beam.combiners.Top.PerKey(
                    max(limits.values()), key=_uri, reverse=True)
                | "Trim" >> beam.FlatMap(lambda kv: kv[1][:limits[kv[0]]]))
        return (kept, free) | "Join" >> beam.Flatten()
