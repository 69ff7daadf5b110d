"""The extract job's flags, in the same parser as Beam's own (`--runner`, `--temp_location`…)."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions


class ExtractOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--source", required=True,
                            help="KIND:URI, KIND in folder | idx (e.g. idx:/data/fashion-mnist)")
        parser.add_argument("--output", required=True,
                            help="folder (any Beam filesystem) that receives runs/<run_id>/")
        parser.add_argument("--backbone", default="efficientnet_lite0",
                            help="registered name or a SavedModel folder")
        parser.add_argument("--splits", default="80,10,10",
                            help="train,validation,test percentages for images whose source has "
                                 "no split of its own")
        parser.add_argument("--limit", default=None,
                            help="read only the first N images: N, or per source split "
                                 "like train=5000,test=1000")
        parser.add_argument("--label_names", default=None,
                            help="file with one class name per line, for sources whose labels "
                                 "are integers (idx)")
        parser.add_argument("--num_shards", type=int, default=4, help="shards per split")
        parser.add_argument("--batch_size", type=int, default=64,
                            help="largest batch fed to the backbone")
        parser.add_argument("--max_pixels", type=int, default=89_478_485,
                            help="images declaring more pixels are rejected as too_large")
        parser.add_argument("--inference_threads", type=int, default=0,
                            help="TF intra-op threads per worker process (0: TF decides)")
        parser.add_argument("--run_id", default=None,
                            help="name of the run folder (default: UTC time + random suffix)")
        parser.add_argument("--verbose", action="store_true", help="log more, keep tracebacks")
