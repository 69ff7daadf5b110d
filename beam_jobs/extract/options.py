"""The extract job's flags, in the same parser as Beam's own (`--runner`, `--temp_location`…)."""

from __future__ import annotations

import os

from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs.extract.stages.augment import POLICIES

COMMIT_EVERY = 20_000  # images per committed chunk; see the --commit_every help and README


class ExtractOptions(PipelineOptions):
    # Not argparse's required=True: Beam parses every PipelineOptions subclass for every
    # pipeline in the process, so that would break unrelated pipelines (tests, TFT's own).
    # beam_jobs.cli.flags.parse_pipeline_options checks these instead.
    REQUIRED = ("source", "output")

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--source",
                            help="KIND:URI, KIND in folder | manifest | tfrecord | cifar10 | idx "
                                 "(e.g. idx:/data/fashion-mnist, tfrecord:gs://b/train-*)")
        parser.add_argument("--output",
                            help="folder (any Beam filesystem) that receives runs/<run_id>/")
        parser.add_argument("--backbone", default="efficientnet_lite0",
                            help="efficientnet_lite0 (embedded), efficientnet_lite0:multi (the "
                                 "same + its 112-channel stage pooled, 1392-d), "
                                 "efficientnet_lite0:spatial (the same + two stages pooled over "
                                 "a 2x2 grid, 3008-d: small far-domain images), a preset "
                                 "(mobilenet_v2, inception_v3), PRESET=SOURCE, a TF Hub/Kaggle "
                                 "handle, a gs:// or local SavedModel folder, or a .keras file")
        parser.add_argument("--splits", default="80,10,10",
                            help="train,validation,test percentages for images whose source has "
                                 "no split of its own")
        parser.add_argument("--limit", default=None,
                            help="read only the first N images: N, or per source split "
                                 "like train=5000,test=1000")
        parser.add_argument("--label_names", default=None,
                            help="file with one class name per line, for sources whose labels "
                                 "are integers (idx)")
        parser.add_argument("--num_shards", type=int, default=0,
                            help="files per split and format: 0 (default) writes one per "
                                 "worker bundle as the records stream past, so memory stays "
                                 "flat however many images; N > 0 gives exactly N but "
                                 "shuffles every record first (in-memory runners hold them all)")
        parser.add_argument("--batch_size", type=int, default=64,
                            help="largest batch fed to the backbone")
        parser.add_argument("--max_pixels", type=int, default=89_478_485,
                            help="images declaring more pixels are rejected as too_large")
        parser.add_argument("--resize_policy", default="squash",
                            choices=("squash", "crop", "pad"),
                            help="how images become the backbone's square input: squash (scale, "
                                 "aspect not kept), crop (centre square) or pad (black borders); "
                                 "recorded in manifest.json, the serving model does the same")
        parser.add_argument("--tfrecord_image_key", default=None,
                            help="tfrecord source: feature key(s) of the encoded image, comma "
                                 "separated, first present wins (default: image/encoded, "
                                 "image_raw, image, encoded)")
        parser.add_argument("--tfrecord_label_key", default=None,
                            help="tfrecord source: feature key(s) of the label, text or int64 "
                                 "(default: image/class/text, image/class/label, label)")
        parser.add_argument("--inference_threads", type=int, default=0,
                            help="TF intra-op threads per worker process (0: TF's default "
                                 "in one process; cores / workers with "
                                 "--direct_running_mode=multi_processing)")
        parser.add_argument("--augment_views", type=int, default=0,
                            help="K cached augmented views per train image besides the image "
                                 "itself (records with view 1..K; validation and test get "
                                 "none): a mild random crop, flip and brightness/contrast "
                                 "jitter, seeded per image, each costing one more forward pass")
        parser.add_argument("--augment_policy", default="default",
                            choices=tuple(POLICIES),
                            help="what a view may do: default (photos, clothes) or no_flip "
                                 "(digits, text: a mirror may change the class)")
        parser.add_argument("--mirror_views", action="store_true",
                            help="also extract the left-right mirror of every image in every "
                                 "split (view -1), for test-time augmentation (tv-train --tta)")
        parser.add_argument("--run_id", default=None,
                            help="name of the run folder (default: UTC time + random suffix)")
        parser.add_argument("--commit_every", type=int, default=COMMIT_EVERY,
                            help="commit a run every N images, so a killed job loses at most "
                                 "the chunk in flight and rerunning the same command resumes "
                                 f"(default {COMMIT_EVERY:,}: about 4 minutes at the 80 "
                                 "images/s of two cores, long enough that the per-chunk cost "
                                 "of starting a pipeline and analysing the chunk stays a few "
                                 "per cent; on Dataflow, where each chunk is a job that takes "
                                 "minutes to start, use a few hundred thousand)")
        parser.add_argument("--extract_again", action="store_true",
                            help="plan a new job even though the same command already "
                                 "completed (or left an unfinished job) under --output")
        parser.add_argument("--incremental", action="store_true",
                            help="extract only images whose image_id no committed run of this "
                                 "backbone under --output holds (or holds under another label)")
        parser.add_argument("--redistribute", action="store_true",
                            help="shuffle the images across workers before decoding: on Flink "
                                 "a source's images otherwise reach one worker (measured: one "
                                 "of two TaskManagers did all the decoding and inference); "
                                 "costs one shuffle of the encoded bytes, which an in-memory "
                                 "runner keeps whole (examples/flink.yaml sets it)")
        parser.add_argument("--verbose", action="store_true", help="log more, keep tracebacks")
        parser.add_argument("--no_progress", action="store_true",
                            help="no progress line (local runners print a bar on a terminal, "
                                 "one plain line per interval in a log)")
        parser.add_argument("--progress_interval", type=float, default=10.0,
                            help="seconds between progress lines")


def threads_per_worker(options) -> int:
    """TF intra-op threads for each worker process, so that workers together fill the cores once.

    `--inference_threads` wins; with DirectRunner's multi_processing each of N workers gets
    cores // N (two processes with TF's default of one thread per core each would run four
    busy threads on two cores); otherwise 0, TensorFlow's default.
    """
    from apache_beam.options.pipeline_options import DirectOptions

    chosen = options.view_as(ExtractOptions).inference_threads
    direct = options.view_as(DirectOptions)
    if chosen or direct.direct_running_mode != "multi_processing":
        return chosen
    cores = os.cpu_count() or 1
    return max(1, cores // (direct.direct_num_workers or cores))
