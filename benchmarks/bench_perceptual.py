"""Speed of the L_CNT backbones on this machine: ms per content-loss evaluation (real forward without grad +
fake forward + backward to the image), batch 2, at 128² and 256², each backbone at its default and a reduced
resolution. VGG19/VGGFace use random weights (same cost as real ones).

    .venv/bin/python benchmarks/bench_perceptual.py [--threads 1] [--reps 5]

On a CPU shared with other jobs, torch's default intra-op threads oversubscribe the cores and timings (and
training steps) get 10-100× slower and erratic; one thread per process gives stable numbers.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from timing import header, measure  # before torch: OpenMP workers wait passively

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from talkinghead.train import losses  # noqa: E402
from talkinghead.backbones import perceptual as P  # noqa: E402


def _random_file(cfg, last, d: Path, name: str) -> Path:
    feats = P._vgg_features(cfg, last)
    sd = {f"features.{i}.{k}": v for i, m in enumerate(feats) if isinstance(m, nn.Conv2d)
          for k, v in m.state_dict().items()}
    path = d / f"{name}.pth"
    torch.save(sd, path)
    return path


def bench(bb, size: int, reps: int, batch: int = 2) -> tuple[float, float]:
    """Median and best wall ms of one content-loss evaluation (after one warm-up)."""
    real = torch.rand(batch, 3, size, size) * 2 - 1

    def step():
        fake = (torch.rand(batch, 3, size, size) * 2 - 1).requires_grad_(True)
        losses.content_loss(fake, real, [(bb, 1.0)]).backward()

    t = measure(step, repeats=reps, warmup=1)
    return t.ms(stat="median"), t.ms()  # the machine is shared: best ≈ unloaded


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)  # >1 on a shared, busy CPU oversubscribes
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        vgg19 = _random_file(P._VGG19_CFG, 36, Path(d), "vgg19")
        vggface = _random_file(P._VGG16_CFG, 30, Path(d), "vggface")
        specs = [("inception", "", None), ("inception", "", 128), ("dlib_resnet", "", None),
                 ("dlib_resnet", "", 112), ("vgg19", vgg19, None), ("vggface", vggface, None)]
        print(header(args.threads))
        print(f"{'backbone':12s} {'res':>5s} {'128² ms':>13s} {'256² ms':>13s}   median (min); batch 2, "
              "fwd real + fwd/bwd fake")
        for name, path, res in specs:
            bb = P.load_backbone(name, path, res)
            row = [bench(bb, s, args.reps) for s in (128, 256)]
            print(f"{name:12s} {str(res or '-'):>5s} " + " ".join(f"{m:6.0f} ({n:4.0f})" for m, n in row), flush=True)


if __name__ == "__main__":
    main()
