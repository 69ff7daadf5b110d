"""Real photo collections: the extract job against the backbone's ceiling and a PyTorch program.

    flock /tmp/tv-heavy.lock python benchmarks/photos_throughput.py --n=150,450

Makes its own corpus of real-looking photos (scikit-image's photographs cropped, resized to
640x480, 1024x768, 2048x1536 and 4032x3024 with sensor noise; JPEG quality 90, some PNG and
WebP) in one folder per source photo, then measures, each part in a fresh process:
(a) ceiling:  the backbone's batched forward pass on the same pixels, already decoded + resized;
(c) pipeline: `python -m beam_jobs.extract --source=folder:...` at two N; its marginal rate
    (N2 - N1) / (t2 - t1) removes the fixed cost per job, its wall rate is N2 / t2;
(p) PyTorch:  what a user would write: PIL decode + resize in a DataLoader with 2 workers,
    reference EfficientNet-Lite0 (efficientnet-lite-pytorch) pooled features, batch 64.
Targets on 2 cores: (c)/(a) >= 0.6 and (c)/(p) >= 3.  Peak RSS is each process's own.
Part (p) needs torch: `pip install -e '.[parity]'` (PyPI's CUDA build, several GB).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")
# (width, height, format) cycled through; one in twelve is a 12-MP photo.
KINDS = ((640, 480, "JPEG"), (1024, 768, "JPEG"), (2048, 1536, "JPEG"), (640, 480, "JPEG"),
         (1024, 768, "JPEG"), (2048, 1536, "JPEG"), (4032, 3024, "JPEG"), (1024, 768, "PNG"),
         (640, 480, "JPEG"), (1024, 768, "JPEG"), (2048, 1536, "JPEG"), (800, 600, "WEBP"))
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


def source_photo(name: str) -> np.ndarray:
    import skimage.data

    return skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(
        skimage.data, name)()


def photo(rng: np.random.Generator, base: np.ndarray, width: int, height: int) -> np.ndarray:
    """A random crop of a real photograph at the target aspect, resized, with sensor noise."""
    from PIL import Image

    h, w = base.shape[:2]
    scale = rng.uniform(0.6, 1.0)
    crop_w = min(w, int(h * scale * width / height))
    crop_h = int(crop_w * height / width)
    x0, y0 = int(rng.integers(0, w - crop_w + 1)), int(rng.integers(0, h - crop_h + 1))
    crop = Image.fromarray(base[y0:y0 + crop_h, x0:x0 + crop_w])
    pixels = np.asarray(crop.resize((width, height), Image.BICUBIC), np.float32)
    noise = rng.normal(0.0, 3.0, (height, width, 1)) + rng.normal(0.0, 2.0, pixels.shape)
    return np.clip(pixels + noise, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **({"quality": 90} if fmt != "PNG" else {}))
    return buffer.getvalue()


def make_corpus(root: str, count: int, seed: int = 0) -> list[str]:
    """`count` photo files under root/<photo name>/, the same files for the same seed."""
    bases = {name: source_photo(name) for name in PHOTOS}
    paths = []
    for index in range(count):
        rng = np.random.default_rng((seed, index))
        name = PHOTOS[index % len(PHOTOS)]
        width, height, fmt = KINDS[index % len(KINDS)]
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{index:05d}.{EXTENSIONS[fmt]}")
        if not os.path.exists(path):
            data = encode(photo(rng, bases[name], width, height), fmt)
            with open(path + ".part", "wb") as f:
                f.write(data)
            os.replace(path + ".part", path)
        paths.append(path)
    return paths


def subset(paths: list[str], root: str) -> str:
    """A folder source holding hard links to `paths`, same labels (sub-folders)."""
    shutil.rmtree(root, ignore_errors=True)
    for path in paths:
        target = os.path.join(root, os.path.basename(os.path.dirname(path)))
        os.makedirs(target, exist_ok=True)
        os.link(path, os.path.join(target, os.path.basename(path)))
    return root


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def part_ceiling(paths: list[str], batch: int) -> dict:
    """(a): the backbone on the pixels the job feeds it, decoded beforehand."""
    from beam_jobs import backbones
    from beam_jobs.images.decode import decode_for_backbone

    backbone = backbones.load("efficientnet_lite0")
    pixels = np.stack([decode_for_backbone(open(p, "rb").read(), backbone.image_size)
                       for p in paths])
    backbone(pixels[:batch])
    start = time.perf_counter()
    for i in range(0, len(pixels), batch):
        backbone(pixels[i:i + batch])
    return {"rate": len(pixels) / (time.perf_counter() - start), "rss_gib": peak_rss_gib()}


def part_pytorch(paths: list[str], batch: int) -> dict:
    """(p): PIL decode + resize in a DataLoader with 2 workers, the reference model."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet
    from PIL import Image

    from beam_jobs.backbones import efficientnet_lite

    class Photos(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, index):
            image = Image.open(paths[index]).convert("RGB").resize((224, 224), Image.BILINEAR)
            array = (np.asarray(image, np.float32) - 127.0) / 128.0
            return torch.from_numpy(array.transpose(2, 0, 1).copy())

    model = EfficientNet.from_pretrained("efficientnet-lite0",
                                         weights_path=efficientnet_lite.weights_path()).eval()
    start = time.perf_counter()
    loader = torch.utils.data.DataLoader(Photos(), batch_size=batch, num_workers=2)
    with torch.no_grad():
        for images in loader:
            model.extract_features(images).mean(dim=(2, 3)).numpy()
    return {"rate": len(paths) / (time.perf_counter() - start), "rss_gib": peak_rss_gib()}


def run_part(part: str, corpus: str, n: int, batch: int) -> dict:
    """One measurement in a fresh process, so each starts cold and owns its peak RSS."""
    out = subprocess.run([sys.executable, __file__, f"--part={part}", f"--corpus={corpus}",
                          f"--n={n}", f"--batch_size={batch}"],
                         check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_extract(folder: str, output: str, batch: int) -> dict:
    """(c) at one N: the job's wall time from process start to exit, and its peak RSS."""
    command = [sys.executable, "-m", "beam_jobs.extract", f"--source=folder:{folder}",
               f"--output={output}", f"--batch_size={batch}", "--no_progress"]
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, _, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    stderr = child.stderr.read().decode() if child.stderr else ""
    manifests = [os.path.join(d, "manifest.json") for d, _, files in os.walk(output)
                 if "manifest.json" in files]
    if not manifests:
        raise SystemExit(f"extract failed:\n{stderr[-3000:]}")
    accepted = sum(json.load(open(m))["accepted"] for m in manifests)
    job_s = sum(json.load(open(m))["durations"]["total_s"] for m in manifests)
    return {"wall_s": wall, "job_s": job_s, "accepted": accepted,
            "cores": (usage.ru_utime + usage.ru_stime) / wall, "rss_gib": usage.ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="150,450", help="two image counts for the pipeline")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--corpus", default=os.path.join(tempfile.gettempdir(), "tv-photos"))
    parser.add_argument("--part", choices=("a", "p"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    counts = sorted(int(n) for n in args.n.split(","))
    paths = make_corpus(args.corpus, counts[-1])
    if args.part:
        fn = part_ceiling if args.part == "a" else part_pytorch
        print(json.dumps(fn(paths[:counts[-1]], args.batch_size)))
        return
    sizes = [os.path.getsize(p) for p in paths]
    print(f"{len(paths)} photos in {args.corpus}, mean {np.mean(sizes) / 1e6:.2f} MB; "
          f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
    ceiling = run_part("a", args.corpus, counts[-1], args.batch_size)
    print(f"(a) backbone batched forward:   {ceiling['rate']:7.1f} img/s "
          f"(peak RSS {ceiling['rss_gib']:.2f} GiB)")
    runs = []
    with tempfile.TemporaryDirectory(prefix="tv-photos-runs-") as work:
        for n in counts:
            folder = subset(paths[:n], os.path.join(work, f"in{n}"))
            runs.append(run_extract(folder, os.path.join(work, f"out{n}"), args.batch_size))
            print(f"(c) tv-extract N={n}: {runs[-1]['wall_s']:.1f} s wall, "
                  f"{runs[-1]['job_s']:.1f} s in the job, {runs[-1]['accepted']} accepted, "
                  f"{runs[-1]['cores']:.2f} cores busy, peak RSS {runs[-1]['rss_gib']:.2f} GiB")
    (n1, r1), (n2, r2) = zip(counts, runs)
    marginal = (n2 - n1) / (r2["wall_s"] - r1["wall_s"])
    fixed = r1["wall_s"] - n1 / marginal
    wall = n2 / r2["wall_s"]
    torch_rate = run_part("p", args.corpus, counts[-1], args.batch_size)
    print(f"(c) marginal rate:              {marginal:7.1f} img/s (fixed cost per job "
          f"{fixed:.1f} s); wall rate at N={n2}: {wall:.1f} img/s")
    print(f"(p) PyTorch DataLoader program: {torch_rate['rate']:7.1f} img/s "
          f"(peak RSS {torch_rate['rss_gib']:.2f} GiB)")
    print(f"(c)/(a) = {marginal / ceiling['rate']:.2f} (target >= 0.6); "
          f"(c)/(p) = {marginal / torch_rate['rate']:.1f} (target >= 3); "
          f"wall (c)/(p) = {wall / torch_rate['rate']:.1f}; "
          f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
