"""Shots: the T aligned frames of one person that an avatar is made from (paper §3.3).

Inputs are photos (paths or arrays) or one video; the face is found in each (largest and most central, or
the `face_index`-th largest) and cropped the way the training data is cropped
(`landmarks.align.crop_from_landmarks`). `embed_shots` gives ê = mean_t E(x_t, y_t) (paper eq. 1).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from talkinghead.config import CROP_MARGIN, CROP_SHIFT_Y
from talkinghead.console import log
from talkinghead.errors import NoFaceError, TalkingHeadError
from talkinghead.persons.checkpoint import file_sha256

DEFAULT_SHOTS = 8  # T: the photos or video frames an avatar is made from by default (paper §3.3)
LARGE_SIDE = 4096  # photos with a larger side are "very large": prepare_shots says how it handles them


@dataclass
class Shots:
    """T aligned shots of one person (paper §3.3): crops (T, S, S, 3) uint8, landmarks in crop pixels
    (T, 68, 2); the first shot's full image and crop transform are the paste-back target."""

    crops: np.ndarray
    points: np.ndarray
    transforms: list  # [CropTransform] per shot
    image: np.ndarray  # (H, W, 3) uint8, the first shot's full image
    image_points: np.ndarray  # (68, 2) the first shot's landmarks in image pixels
    hashes: list[str]

    def __len__(self) -> int:
        return len(self.crops)

    def tensors(self, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y): frames and landmark images, each (T, 3, S, S) in [-1, 1]."""
        from talkinghead.media.images import from_uint8
        from talkinghead.landmarks.rasterize import landmark_image_tensor

        x = from_uint8(self.crops)  # (T, 3, S, S)
        y = landmark_image_tensor(self.points, self.crops.shape[1])  # (T, 3, S, S)
        return x.to(device), y.to(device)


def _array_hash(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _evenly(n: int, k: int) -> list[int]:
    if k >= n:
        return list(range(n))
    return sorted({int(round(i * (n - 1) / max(k - 1, 1))) for i in range(k)})


def _load_inputs(inputs, shots: int) -> tuple[list[tuple[np.ndarray, str, str]], bool]:
    """inputs: image paths, (H, W, 3) arrays, or one video path -> ([(image, label, hash)], is_video): ≤ shots
    images evenly spaced over the inputs, or 2·shots candidate frames evenly spaced over the video."""
    from talkinghead.media import image_files, video

    if isinstance(inputs, (str, os.PathLike, np.ndarray)):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise TalkingHeadError("no source images given")
    if len(inputs) == 1 and not isinstance(inputs[0], np.ndarray) and video.is_video_path(inputs[0]):
        path = Path(inputs[0])
        info = video.probe_video(path)
        digest = file_sha256(path)
        n = max(info.num_frames, 1)
        # a few more candidates than shots: frames without a face are skipped
        want = _evenly(n, max(shots * 2, shots + 2))
        frames = [(f, f"{path.name} frame {i}", f"{digest}:{i}")
                  for i, f in video.iter_indexed_frames(path, indices=want)]
        if not frames:
            raise video.VideoError(f"cannot read any frame of {path}")
        return frames, True
    out = []
    for item in (inputs[i] for i in _evenly(len(inputs), shots)):
        if isinstance(item, np.ndarray):
            out.append((np.asarray(item, np.uint8), "image", _array_hash(item)))
        else:
            if video.is_video_path(item):
                raise TalkingHeadError(f"{item}: give either one video or images, not both")
            out.append((image_files.read_image(item), str(item), file_sha256(item)))
    return out, False


def prepare_shots(inputs, image_size: int, shots: int = DEFAULT_SHOTS, face_index: int | None = None,
                  detector=None, framing: tuple[float, float] = (CROP_MARGIN, CROP_SHIFT_Y)) -> Shots:
    """Detect the face (largest/central, or the `face_index`-th largest) in each input and crop it the way
    the training data is cropped (`landmarks.align.crop_from_landmarks` with `framing` = (margin, shift_y),
    a model's `model_framing`). Images without a face raise
    NoFaceError (NoFaceFoundError when no detector stage found one); for a video, frames without a face are
    skipped and the T shots are spread over it. The default detector is the face-finding cascade
    (landmarks/cascade.py); `detector` may be a landmarks.manual.ManualLandmarks (the points of one photo)."""
    from talkinghead.landmarks.align import crop_from_landmarks
    from talkinghead.landmarks.cascade import STAGE_NAMES, NoFaceFoundError, photo_cascade, video_cascade
    from talkinghead.landmarks.detect import MIN_INTEROCULAR, UnsearchableImageError, interocular, pick_face
    from talkinghead.landmarks.manual import ManualLandmarks

    shots = max(1, int(shots))
    items, is_video = _load_inputs(inputs, shots)
    if isinstance(detector, ManualLandmarks):
        if is_video or len(items) > 1:
            raise TalkingHeadError(f"{detector.label} describe one photo: give exactly one source photo with them")
        face_index = None
    if detector is None:
        detector = video_cascade() if is_video else photo_cascade(min_faces=(face_index or 0) + 1)
    large = [(label, image.shape) for image, label, _ in items if max(image.shape[:2]) > LARGE_SIDE]
    if large and getattr(detector, "max_side", 0):
        (label, (h, w, _)), n = large[0], len(large)
        more = f" ({n} inputs over {LARGE_SIDE} px)" if n > 1 else ""
        log.info("%s is %dx%d%s: the face is found on a %d-px copy; landmarks and the pasted-back output keep "
                 "the full size", label, w, h, more, detector.max_side)
    found, small = [], None
    for image, label, digest in items:
        try:
            faces = detector.detect(image)
        except UnsearchableImageError as e:  # too small or elongated: say which input
            raise UnsearchableImageError(f"{label}: {e}") from None
        face = pick_face(faces, image.shape, face_index)
        if face is not None and getattr(detector, "last_stage", None):
            log.debug("%s: face found by %s", label, STAGE_NAMES.get(detector.last_stage, detector.last_stage))
        if face is not None and interocular(face.points) < MIN_INTEROCULAR:
            small = (f"the face in {label} is too small for its 68 landmarks: {interocular(face.points):.0f} px "
                     f"between the outer eye corners, at least {MIN_INTEROCULAR} needed (use a larger photo of it)")
            face = None
        if face is None:
            if is_video:
                continue
            if small or faces:
                raise NoFaceError(small or f"no face with index {face_index} found in {label} (faces found: "
                                  f"{len(faces)})")
            raise NoFaceFoundError(label, getattr(detector, "tried", None))
        found.append((image, face.points, digest))
    if not found:
        raise NoFaceError(small or f"no face found in any of {len(items)} frames of the source video")
    found = [found[i] for i in _evenly(len(found), shots)]
    crops, points, transforms = [], [], []
    for image, pts, _ in found:
        ct = crop_from_landmarks(pts, image_size, *framing)
        crops.append(ct.crop(image))
        points.append(ct.points_to_crop(pts))
        transforms.append(ct)
    return Shots(crops=np.stack(crops), points=np.stack(points).astype(np.float32), transforms=transforms,
                 image=found[0][0], image_points=np.asarray(found[0][1], np.float32),
                 hashes=[d for _, _, d in found])


@torch.no_grad()
def embed_shots(E: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """ê = mean_t E(x_t, y_t) (paper eq. 1, §3.3 FF). x, y: (T, 3, S, S) -> (N,)."""
    E.eval()
    es = [E(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)]  # (b, N) each
    return torch.cat(es).mean(dim=0)


def model_framing(model_cfg) -> tuple[float, float]:
    """(margin, shift_y) of the crops a model (its config.ModelConfig) was trained on."""
    return model_cfg.crop_margin, model_cfg.crop_shift_y


def embed_person(inputs, model, shots: int = DEFAULT_SHOTS, face_index: int | None = None, detector=None,
                 device="cpu") -> tuple[Shots, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shots of the person in `inputs` and their embedding: (shots, x, y, ê) with x, y (T, 3, S, S) and
    ê (N,) from `model` (a checkpoint.LoadedModel) — the start of every avatar (paper §3.3)."""
    sh = prepare_shots(inputs, model.cfg.model.image_size, shots, face_index, detector,
                       model_framing(model.cfg.model))
    x, y = sh.tensors(device)
    return sh, x, y, embed_shots(model.E, x, y)
