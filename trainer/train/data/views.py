"""Cached views: which records of a run an epoch, an evaluation or test-time augmentation reads.

An extract run may hold, besides each image's own record (view 0), K augmented views of every
train image (views 1..K) and, with `--mirror_views`, a left-right mirror of every image of every
split (view -1); all share the image's image_id, uri, label and split.  Counts and epochs stay
in images: each training epoch presents exactly one view per train image, drawn uniformly among
the views it has (the original and the mirror included), a new draw each epoch, repeatable for a
fixed seed.  The draw is a stateless hash of (image_id, epoch seed) modulo the image's number
of views: exactly one of an image's records matches it, wherever in the stream the others lie,
so shards still stream (and a cached split is sampled after the cache).  Where the extract job
lost a view (its inference failed) the image gets its original when that view is drawn, and
views whose original was lost are skipped (see `view_gaps`).  Validation and test read view 0
only, except test-time augmentation, which averages over views 0 and -1.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Collection, Mapping, Sequence

import tensorflow as tf

from beam_jobs.cli.errors import UserError
from beam_jobs.runs.read import Run
from schemas import record

TRAIN = record.SPLITS[0]
_HASH_BUCKETS = 1 << 62  # the hash is taken modulo a run's view count afterwards
N_VIEWS = "n_views"  # a row's count of views of its image (from its run), not a record field
NO_VIEWS: Mapping[str, Any] = {"augment_views": 0, "mirror": False}


def run_views(run: Run) -> dict[str, Any]:
    """The run's manifest `views` (what the extract job cached), {K=0, no mirror} for older runs."""
    return {**NO_VIEWS, **run.manifest.get("views", {})}


def view_indices(run: Run, split: str) -> list[int]:
    """The views each image of `split` has in `run`: itself, its K augmented views (train
    only) and its mirror."""
    views = run_views(run)
    augmented = int(views["augment_views"]) if split == TRAIN else 0
    return list(range(1 + augmented)) + ([record.MIRROR_VIEW] if views["mirror"] else [])


def views_per_image(run: Run, split: str) -> int:
    return len(view_indices(run, split))


def views_by_run(runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    """run id → its manifest `views`, as metrics.json records them."""
    return {run.run_id: run_views(run) for run in runs}


def describe_views(by_run: Mapping[str, Mapping[str, Any]]) -> str:
    """One phrase for the report, e.g. "original + 4 augmented + mirror" (each distinct
    combination among the runs, joined by "; ")."""
    def phrase(views: Mapping[str, Any]) -> str:
        parts = ([f"{int(views['augment_views'])} augmented"] if views["augment_views"] else []
                 ) + (["mirror"] if views["mirror"] else [])
        return " + ".join(["original"] + parts) if parts else "original only"

    phrases = sorted({phrase({**NO_VIEWS, **views}) for views in by_run.values()})
    return "; ".join(phrases) if phrases else "original only"


def has_views(runs: Sequence[Run], split: str) -> bool:
    return any(views_per_image(run, split) > 1 for run in runs)


def check_mirrored(runs: Sequence[Run], data: str) -> None:
    """`--tta` averages each image with its mirror, so every run must hold mirror views."""
    missing = [run.run_id for run in runs if not run_views(run)["mirror"]]
    if missing:
        raise UserError(f"--tta needs mirror views, but run(s) {', '.join(missing)} under {data}"
                        f" have none; extract with --mirror_views.")


def has_gaps(run: Run) -> bool:
    """Whether some view of some split holds other than one record per image: the extract job
    leaves a view out when its inference failed, and keeps views whose original failed."""
    view_counts = run.manifest.get("view_counts")
    if not view_counts:  # older runs: images only
        return False
    return any(int(view_counts.get(split, {}).get(str(view), 0)) != run.count(split)
               for split in record.SPLITS for view in view_indices(run, split))


@dataclasses.dataclass(frozen=True)
class ViewGaps:
    """What keeps a run with gaps at one view per image (found by `view_gaps`)."""

    orphans: tuple[str, ...] = ()  # `<run path>|<image_id>`: views of an image without view 0
    missing: tuple[str, ...] = ()  # `<image_id>|<slot>`: a train view the image lacks


def view_gaps(runs: Sequence[Run], skipped: Collection[str]) -> ViewGaps:
    """Read (image_id, view) of the runs with gaps (a few bytes a row; none for complete runs).
    Records whose image has no view 0 are skipped like superseded ones (the image is not in
    `counts`); a train view an image lacks falls back to its view 0 when drawn.  Images in
    `skipped` (superseded by a newer run) are left alone: they are never read."""
    from beam_jobs.runs.read import id_columns

    orphans: list[str] = []
    missing: list[str] = []
    for run in (run for run in runs if has_gaps(run)):
        for split in record.SPLITS:
            present: dict[str, set[int]] = {}
            for shard in run.shards(split, "parquet"):
                for batch in id_columns(shard, (record.IMAGE_ID, record.VIEW)):
                    for image_id, view in zip(batch[record.IMAGE_ID], batch[record.VIEW]):
                        present.setdefault(image_id, set()).add(int(view))
            expected = view_indices(run, split)
            for image_id, views in present.items():
                if f"{run.path}|{image_id}" in skipped:
                    continue
                if record.ORIGINAL_VIEW not in views:
                    orphans.append(f"{run.path}|{image_id}")
                elif split == TRAIN:
                    missing += [f"{image_id}|{slot}" for slot, view in enumerate(expected)
                                if view not in views]
    return ViewGaps(tuple(orphans), tuple(missing))


def view_slot(view: tf.Tensor, n_views: tf.Tensor) -> tf.Tensor:
    """Views 0..K keep their index; the mirror takes the last slot, K + 1."""
    return tf.where(view < 0, n_views - 1, view)


def drawn_slot(image_id: tf.Tensor, n_views: tf.Tensor, epoch_seed: tf.Tensor) -> tf.Tensor:
    """The slot this epoch draws for an image: a stateless hash, the same for all its views."""
    key = tf.strings.join([image_id, tf.strings.as_string(epoch_seed)], "|")
    return tf.math.floormod(tf.strings.to_hash_bucket_fast(key, _HASH_BUCKETS),
                            tf.cast(n_views, tf.int64))


def one_view_per_image(rows: tf.data.Dataset, seed: int | None,
                       missing: Sequence[str] = ()) -> tf.data.Dataset:
    """Rows (dicts with image_id, view, n_views) → one row per image, a new draw per iteration.

    `Dataset.random(..., rerandomize_each_iteration=True)` gives each iteration (each Keras
    epoch) its own seed, from `seed`, so runs with the same seed draw the same views.  A row
    is kept when its view's slot is the one drawn, or when it is view 0 and the image lacks
    the drawn view (`missing`, `ViewGaps.missing`).
    """
    absent = None
    if missing:
        absent = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(missing)), tf.ones(len(missing), tf.int64)), default_value=0)

    def keep(row, epoch_seed):
        view, n_views = tf.cast(row[record.VIEW], tf.int64), tf.cast(row[N_VIEWS], tf.int64)
        drawn = drawn_slot(row[record.IMAGE_ID], n_views, epoch_seed)
        kept = tf.equal(drawn, view_slot(view, n_views))
        if absent is None:
            return kept
        lacking = absent.lookup(tf.strings.join([row[record.IMAGE_ID],
                                                 tf.strings.as_string(drawn)], "|")) > 0
        return tf.logical_or(kept, tf.logical_and(lacking, tf.equal(view, record.ORIGINAL_VIEW)))

    epoch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    return epoch_seeds.flat_map(
        lambda epoch_seed: rows.filter(lambda row: keep(row, epoch_seed)))
