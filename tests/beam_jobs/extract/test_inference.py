"""The RunInference handler: the serving resize's pixels, fixed batches, threads per worker."""

from __future__ import annotations

import os

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import backbones
from beam_jobs.extract.options import threads_per_worker
from beam_jobs.extract.stages.inference import BackboneModelHandler
from beam_jobs.images.decode import resize_to_square


@pytest.mark.parametrize("policy", ["squash", "crop", "pad"])
def test_batched_compiled_resize_gives_the_serving_resize_pixels(tiny_backbone, policy):
    rng = np.random.default_rng(0)
    batch = ([rng.integers(0, 256, (28, 28, 1), dtype=np.uint8) for _ in range(3)]
             + [rng.integers(0, 256, (37, 50, 3), dtype=np.uint8) for _ in range(2)]
             + [rng.integers(0, 256, (9, 40, 3), dtype=np.uint8)]
             + [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)])  # resized by the decode stage
    handler = BackboneModelHandler(backbones.load(tiny_backbone), resize_policy=policy)
    expected = np.stack([resize_to_square(image, 16, policy).numpy() for image in batch])
    np.testing.assert_array_equal(handler.resize_batch(batch), expected)


def test_one_graph_for_resize_and_forward_gives_the_two_step_features(tiny_backbone):
    """Batches of S×S photos go straight to the backbone, of one small shape through the fused
    resize+forward graph, mixed ones resize per shape: all must give what the backbone gives
    on the serving resize's pixels."""
    from beam_jobs.backbones import SIGNATURE_INPUT, SIGNATURE_OUTPUT

    rng = np.random.default_rng(1)
    backbone = backbones.load(tiny_backbone)
    handler = BackboneModelHandler(backbone)
    model = handler.load_model()
    uniform = [rng.integers(0, 256, (28, 28, 1), dtype=np.uint8) for _ in range(4)]
    mixed = uniform[:2] + [rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)]
    resized = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(3)]
    for batch in (uniform, mixed, resized, resized + mixed):
        got = np.stack([r.inference for r in handler.run_inference(batch, model)])
        pixels = np.stack([resize_to_square(image, backbone.image_size).numpy()
                           for image in batch])
        want = model(**{SIGNATURE_INPUT: pixels})[SIGNATURE_OUTPUT].numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_handler_feeds_fixed_size_batches_by_default(tiny_backbone):
    kwargs = BackboneModelHandler(backbones.load(tiny_backbone),
                                  max_batch_size=32).batch_elements_kwargs()
    assert kwargs["min_batch_size"] == kwargs["max_batch_size"] == 32


def _options(*flags: str) -> PipelineOptions:
    return PipelineOptions(["--source=idx:/x", "--output=/y", *flags])


def test_multi_process_workers_share_the_cores_without_oversubscribing():
    cores = os.cpu_count() or 1
    workers = _options("--direct_running_mode=multi_processing", "--direct_num_workers=2")
    assert threads_per_worker(workers) == max(1, cores // 2)
    assert threads_per_worker(_options()) == 0  # one process: TF's own default
    assert threads_per_worker(_options("--direct_running_mode=multi_processing",
                                       "--direct_num_workers=2",
                                       "--inference_threads=3")) == 3
