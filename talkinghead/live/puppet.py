"""The per-frame puppet of live puppeteering (DESIGN.md §2, real time): a camera frame → tracked landmarks → the
driver's relative motion on the avatar's face → G → pasted back into the avatar's photo.

`LivePuppet` is the per-frame library API (`process(frame) -> frame`, with stage timings); `talkinghead live`
and the web app's live tab are thin shells around it, and `talkinghead.live.loop.run_live` drives it in real
time. The motion reference is the first frame with a face (there is no look-ahead in a live stream;
`recalibrate()` takes the next one instead).

Speed: the photo is scaled to at most `max_size` pixels (the face box with it, aligned to whole pixels) so that
the composition at the face's size, the paste-back and the encoder work on what is shown; the paste-back
blends into a copy of the fixed background in torch (no resampling, the mask made once).
"""


from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from talkinghead.inference.animator import Animator
from talkinghead.persons.avatar import Avatar
from talkinghead.errors import TalkingHeadError
from talkinghead.media.images import from_uint8, to_uint8
from talkinghead.nn import GenInputs

# the stages of one frame, in order: capture runs in the camera thread, watermark and write in the output thread
STAGES = ("capture", "tracking", "retarget", "generator", "paste-back", "watermark", "write")


class StageTimes:
    """Seconds spent in named stages, wall clock and the CPU time of the thread that ran them (a stage's own
    work, whatever else shares the machine; torch's extra intra-op threads are not in it), filled from one
    thread."""

    def __init__(self):
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.cpu_seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.counts: dict[str, int] = dict.fromkeys(STAGES, 0)

    def add(self, stage: str, seconds: float, cpu_seconds: float = 0.0) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        self.cpu_seconds[stage] = self.cpu_seconds.get(stage, 0.0) + cpu_seconds
        self.counts[stage] = self.counts.get(stage, 0) + 1


def clocks() -> tuple[float, float]:
    """(wall, this thread's CPU) in seconds."""
    return time.perf_counter(), time.thread_time()


def default_tracker(fps: float = 25.0):
    """dlib's 68 points, detected now and then and tracked in between (landmarks.track.VideoLandmarkTracker,
    causal smoothing in `update`); detection on frames scaled to at most 640 px (a webcam's face is large)."""
    from talkinghead.landmarks.detect import DlibDetector
    from talkinghead.landmarks.track import VideoLandmarkTracker

    return VideoLandmarkTracker(DlibDetector(upsample=0, max_side=640), fps=fps)


def load_source(source, model=None, device="cpu", face_index: int | None = None):
    """(avatar, model or None) from an .avatar file or a photo: a photo becomes a feed-forward avatar (paper
    §3.3 FF) made with `model` (default the bundled one); an FF avatar file whose recorded model file is gone
    uses the bundled model when that is the one it was made with (checked by the Animator)."""
    from talkinghead import bundled
    from talkinghead.media import video
    from talkinghead.persons.avatar import AVATAR_SUFFIX, make_ff_avatar
    from talkinghead.persons.checkpoint import LoadedModel, resolve_model

    source = Path(source)
    if not source.exists():
        raise TalkingHeadError(f"avatar or photo not found: {source}")
    if source.suffix == AVATAR_SUFFIX:
        avatar = Avatar.load(source)
        if model is not None:
            model = LoadedModel.load(resolve_model(model), device, with_discriminator=False)
        elif avatar.mode == "ff" and not Path(avatar.model.get("path", "")).is_file() and bundled.MODEL.is_file():
            model = LoadedModel.load(bundled.MODEL, device, with_discriminator=False)
        return avatar, model
    if not video.is_image_path(source):
        raise TalkingHeadError(f"--avatar takes an .avatar file or a photo ({', '.join(video.IMAGE_EXTENSIONS)}), "
                               f"got {source.name}")
    model = LoadedModel.load(resolve_model(model), device, with_discriminator=False)
    return make_ff_avatar([str(source)], model, shots=1, face_index=face_index, device=device), model


def _scaled_avatar(avatar: Avatar, max_size: int) -> Avatar:
    """The avatar with its photo scaled to at most `max_size` px (0: as it is), cut to even sides (H.264), and
    its face box moved to whole pixels with an integer side R: the render at R is then pasted without
    resampling (the box moves by at most half a pixel; the landmarks stay in the S crop's own coordinates)."""
    from PIL import Image

    from talkinghead.landmarks.align import CropTransform

    image = avatar.source_image
    h, w = image.shape[:2]
    s = min(1.0, max_size / max(h, w)) if max_size else 1.0
    if s < 1.0:
        image = np.asarray(Image.fromarray(image).resize((max(2, round(w * s)), max(2, round(h * s))),
                                                         Image.BICUBIC))
    sy, sx = image.shape[0] / h, image.shape[1] / w
    image = image[:image.shape[0] // 2 * 2, :image.shape[1] // 2 * 2]
    c = avatar.crop
    side = c.side * (sx + sy) / 2
    r = max(2, round(side))
    # box edges in PIL coordinates (pixel i covers [i, i+1)): x0 = cx - side/2 + 0.5, rounded to a whole pixel
    x0 = round((c.cx + 0.5) * sx - 0.5 - side / 2 + 0.5)
    y0 = round((c.cy + 0.5) * sy - 0.5 - side / 2 + 0.5)
    crop = CropTransform(x0 + r / 2 - 0.5, y0 + r / 2 - 0.5, float(r), c.size)
    return dataclasses.replace(avatar, source_image=np.ascontiguousarray(image), crop=crop)


def _feather(r: int, feather: float) -> torch.Tensor:
    """(1, 1, R, R) blend mask: 1 inside, a linear ramp over `feather` × R at the border (as paste_back)."""
    u = (torch.arange(r, dtype=torch.float32) + 0.5) / r
    d = torch.minimum(u, 1 - u)
    ramp = (d / feather).clamp(0, 1) if feather > 0 else torch.ones(r)
    return (ramp[:, None] * ramp[None, :])[None, None]


@dataclass
class Pose:
    """One camera frame's face, ready for the generator: landmarks in the avatar's crop and G's inputs."""

    points: np.ndarray  # (1, 68, 2)
    inputs: GenInputs  # Animator.prepare: landmark image (1, 3, S, S), ψ, the texture with its flow grid


class LivePuppet:
    """One avatar driven frame by frame: ``process(frame (H, W, 3) uint8) -> (H', W', 3) uint8``.

    The camera's face is tracked (`tracker`: anything with ``update(frame) -> Face | None`` and ``reset()``;
    default `default_tracker`), its motion relative to the first tracked frame is retargeted onto the avatar's
    face (landmarks.retarget; `absolute`: the driver's landmarks as they are), rendered by the Animator at the
    face's size in the photo scaled to at most `max_size` px, and pasted back (`crop_only`: the face box
    alone). A frame without a face shows the last rendered frame. ``times`` holds each stage's seconds,
    ``frames`` and ``no_face`` count the frames processed and those without a face. ``process`` is
    ``render(pose(frame))``: the halves can run in two threads (run_live's pipeline). mixed_precision: G's
    convolutions in bfloat16 where the CPU has it natively (Animator's mixed_precision: 0.05 grey levels from
    float32 on average). regions: the model's region generators fill the mouth the driver opens and the eyes
    it closes, as in `animate` (Animator's `regions`).
    """

    def __init__(self, avatar: Avatar, model=None, *, device="cpu", max_size: int = 720, crop_only: bool = False,
                 absolute: bool = False, fps: float = 25.0, tracker=None, feather: float = 0.08,
                 dtype: torch.dtype = torch.float32, mixed_precision: bool = True, regions: bool = True):
        from talkinghead.landmarks.retarget import retarget

        self._retarget = retarget
        self.avatar = _scaled_avatar(avatar, max_size)
        self.crop_only = crop_only
        self.absolute = absolute
        c = self.avatar.crop
        self.box_size = r = int(c.side)  # R
        # one frame at a time: G traced and frozen, convolutions in bfloat16 where the CPU has it natively
        self.animator = Animator(self.avatar, model=model, device=device, dtype=dtype, max_output_size=r,
                                 freeze=True, mixed_precision=mixed_precision, regions=regions)
        self.tracker = tracker if tracker is not None else default_tracker(fps)
        self.background = self.avatar.source_image  # (H', W', 3) uint8, the scaled photo
        bh, bw = self.background.shape[:2]
        x0, y0 = round(c.cx - c.side / 2 + 0.5), round(c.cy - c.side / 2 + 0.5)  # whole pixels by construction
        # the part of the R×R box inside the photo: frame rows/columns and the box's own
        self._dst = (slice(max(y0, 0), min(y0 + r, bh)), slice(max(x0, 0), min(x0 + r, bw)))
        self._src = (slice(max(y0, 0) - y0, min(y0 + r, bh) - y0), slice(max(x0, 0) - x0, min(x0 + r, bw) - x0))
        self._box_background = from_uint8(c.resized(r).crop(self.background))[None]  # (1, 3, R, R)
        self._mask = _feather(r, feather)  # (1, 1, R, R)
        self.times = StageTimes()
        self.frames = self.no_face = 0
        self._reference: np.ndarray | None = None
        for _ in range(2):  # warm-up (the first passes allocate and pick kernels); shows the avatar's own pose
            self.last = self._compose(self.animator.render_points(self.avatar.source_points[None], full_size=True))

    @classmethod
    def from_source(cls, source, model=None, *, device="cpu", face_index: int | None = None,
                    **kwargs) -> "LivePuppet":
        """From an .avatar file or a photo (an FF avatar made at once with `model`, default the bundled one)."""
        avatar, model = load_source(source, model, device, face_index)
        return cls(avatar, model, device=device, **kwargs)

    @property
    def output_size(self) -> tuple[int, int]:
        """(W, H) of the frames `process` returns."""
        return (self.box_size, self.box_size) if self.crop_only else \
            (self.background.shape[1], self.background.shape[0])

    def stage_ms(self) -> dict[str, float]:
        """Mean wall ms per processed frame of each of its stages (tracking, retarget, generator, paste-back)."""
        n = max(self.frames, 1)
        return {k: 1e3 * self.times.seconds[k] / n for k in ("tracking", "retarget", "generator", "paste-back")}

    def recalibrate(self) -> None:
        """The next frame with a face becomes the motion reference (e.g. after the driver moved the camera)."""
        self._reference = None

    def reset(self) -> None:
        """Forget the tracked face and the reference (a new camera or driver)."""
        self.tracker.reset()
        self._reference = None

    def process(self, frame: np.ndarray) -> np.ndarray:
        """One camera frame (H, W, 3) uint8 RGB -> the avatar's frame (output_size) uint8 RGB."""
        return self.render(self.pose(frame))

    def pose(self, frame: np.ndarray) -> Pose | None:
        """The first half of `process` (tracking, retarget, G's inputs): None where the frame has no face."""
        c0 = clocks()
        face = self.tracker.update(frame)
        c1 = clocks()
        self.times.add("tracking", c1[0] - c0[0], c1[1] - c0[1])
        self.frames += 1
        if face is None:
            self.no_face += 1
            return None
        if self._reference is None:
            self._reference = np.array(face.points, np.float32)
        targets = self._retarget(self.avatar.source_points, np.asarray(face.points)[None], self._reference,
                                 absolute=self.absolute)  # (1, 68, 2) in the avatar's crop
        pose = Pose(targets, self.animator.prepare(targets))
        c2 = clocks()
        self.times.add("retarget", c2[0] - c1[0], c2[1] - c1[1])
        return pose

    def render(self, pose: Pose | None) -> np.ndarray:
        """The second half of `process` (G, composition at the face's size, paste-back); None: the last frame."""
        if pose is None:
            return self.last
        c0 = clocks()
        out = self.animator.generate(pose.inputs)  # GenOutput at S
        c1 = clocks()
        out = self.animator.compose_full(out) if self.animator.output_size != self.animator.image_size \
            else out.image  # (1, 3, R, R)
        out = self.animator.fill_regions(out, pose.points)  # the mouth's hole and closing eyes, as animate's
        self.last = self._compose(out)
        c2 = clocks()
        self.times.add("generator", c1[0] - c0[0], c1[1] - c0[1])
        self.times.add("paste-back", c2[0] - c1[0], c2[1] - c1[1])
        return self.last

    def _compose(self, rendered: torch.Tensor) -> np.ndarray:
        """(1, 3, R', R') in [-1, 1] -> the output frame: blended into the box's background, pasted."""
        r = self.box_size
        x = rendered.float()
        if x.shape[-1] != r:
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=x.shape[-1] > r)
        bg = self._box_background
        face = to_uint8(bg + self._mask * (x - bg))[0]  # (R, R, 3)
        if self.crop_only:
            return np.ascontiguousarray(face)
        out = self.background.copy()
        out[self._dst] = face[self._src]
        return out
