"""Animator: an avatar + driving landmark images → frames (paper §3.3 inference). Tensors only, no file I/O
(DESIGN.md §4, layered inference): the pipeline (talkinghead.inference.pipeline), the CLI and the web app sit on top.

The person-specific AdaIN parameters ψ (ψ̂ = P·ê for FF, ψ' for FT) are computed once per avatar and cached;
each frame is then one pass of G's landmark-to-image path. Spectral normalisation can be folded into plain
weights for inference (same outputs, less work per frame). ``backend="onnx"`` runs G in ONNX Runtime (the
optional ``fast`` extra: onnxruntime + onnx; CPU, float32), output within 1/255 of torch's
(benchmarks/bench_generator.py compares their speed); without the packages it warns and stays on torch.
When the model has region generators (the mouth interior and the eyelids, DESIGN.md §2), the frames rendered
from landmarks get what the photo cannot show filled by them (inference/regions.py).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import replace

import numpy as np
import torch

from talkinghead.persons.avatar import Avatar
from talkinghead.console import log
from talkinghead.nn import GenInputs, GenOutput, Texture


class Animator:
    """``render(y (B,3,S,S) in [-1,1]) -> (B,3,S,S) in [-1,1]`` for one avatar.

    model: for FF avatars the model file (path or avatar.LoadedModel; default the path recorded in the
    avatar); for FT avatars optional (checked against the avatar's model when given).
    fold: fold spectral norm into the weights (inference only). dtype: e.g. torch.bfloat16 / float16.
    backend: "torch" (default) or "onnx" (ONNX Runtime on the CPU, float32 only; falls back to torch with a
    warning when onnxruntime/onnx are not installed). ``self.backend`` says which one renders.
    freeze: the warp-guided G's one-frame pass traced with ψ and the source's features as constants
    (torch.jit.freeze), used for batches of one (live rendering): the same output for less CPU per frame
    (benchmarks/bench_live.py); it takes a moment to trace. mixed_precision (with freeze): the trace made under
    torch.autocast(bfloat16) where the CPU computes bfloat16 natively (AVX512-BF16/AMX; elsewhere float32 as
    before): convolutions in bfloat16, the frames within a few grey levels of float32's (docs/benchmarks.md).
    ``self.mixed_precision`` says whether it is on. regions: fill the driving mouth's hole and closing eyes with
    the model's region generators in `render_points` (when the avatar has them); ``self.regions`` holds them.
    """

    def __init__(self, avatar: Avatar, model=None, device: str | torch.device = "cpu", fold: bool = True,
                 dtype: torch.dtype = torch.float32, backend: str = "torch", max_output_size: int = 1024,
                 freeze: bool = False, mixed_precision: bool = False, regions: bool = True):
        if backend not in ("torch", "onnx"):
            raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
        self.avatar = avatar
        self.device = torch.device(device)
        self.dtype = dtype
        if avatar.mode == "ff" or model is not None:
            model = avatar.loaded_model(model, self.device)  # read once for G and the region generators
        G, psi = avatar.generator(model, self.device)  # ψ: (1, P), computed once here
        if fold:
            from talkinghead.nn import build_generator, fold_spectral_norm

            if avatar.mode == "ff":  # G is the model's own, which later avatars fine-tune from: fold a copy
                own = build_generator(avatar.config.model).to(self.device)
                own.load_state_dict(G.state_dict())
                G = own
            G = fold_spectral_norm(G)
        self.G = G.to(self.device, dtype).eval().requires_grad_(False)
        self.psi = psi.detach().to(self.device, dtype)  # (1, P)
        self.image_size = avatar.image_size
        self.source = None  # G's texture source (x, y, features; the grid per frame), once per avatar
        self.output_size = self.image_size
        if self.G.needs_texture:  # the warp-guided G (DESIGN.md §2)
            from talkinghead.media.images import from_uint8
            from talkinghead.landmarks.rasterize import landmark_image_tensor

            x = from_uint8(avatar.source_crop)[None].to(self.device, dtype)  # (1, 3, S, S)
            y = landmark_image_tensor(avatar.source_points, self.image_size)[None].to(self.device, dtype)
            with torch.no_grad():
                self.source = Texture(x, y, None, self.G.encode(x))
            # full-resolution composition: the face box as large as it is in the source image (≤ max_output_size)
            self.output_size = int(min(max(round(avatar.crop.side), self.image_size), max_output_size))
            full = avatar.crop.resized(self.output_size).crop(avatar.source_image)  # (R, R, 3) uint8, once
            self.source_full = from_uint8(full)[None].to(self.device, dtype)  # (1, 3, R, R)
        textured = self.source is not None
        self.regions = []  # inference.regions' MouthFill / EyeFill per region generator, used in render_points
        if regions and textured:
            from talkinghead.inference.regions import region_fill

            for G_r, psi_r in avatar.region_generators(model, self.device).values():
                self.regions.append(region_fill(G_r, avatar.source_crop[None], avatar.source_points[None],
                                                self.image_size, psi=psi_r))
        self.mixed_precision = bool(mixed_precision and freeze and textured and self.device.type == "cpu"
                                    and dtype == torch.float32 and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        self._frozen = _frozen_render(self, self.mixed_precision) if freeze and textured else None
        self.backend, self._session = "torch", None
        if backend == "onnx" and textured:
            log.warning("backend 'onnx' is not available for the warp-guided generator; rendering with torch")
        elif backend == "onnx":
            if self.device.type != "cpu" or dtype != torch.float32:
                raise ValueError("backend 'onnx' runs float32 on the CPU")
            self._session = _onnx_session(self.G, self.psi, self.image_size)
            if self._session is not None:
                self.backend = "onnx"

    @torch.no_grad()
    def render(self, landmark_images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) landmark images in [-1, 1] -> (B, 3, S, S) frames in [-1, 1] (float32, CPU-agnostic).
        A G without a texture only: the warp-guided G needs the landmarks themselves (`render_points`)."""
        if self.source is not None:
            raise ValueError("the warp-guided generator renders from landmarks: use render_points")
        y = landmark_images.to(self.device, self.dtype)
        if y.ndim != 4 or y.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"expected (B, 3, {self.image_size}, {self.image_size}) landmark images, "
                             f"got {tuple(y.shape)}")
        if self._session is not None:
            feed = {"y": y.contiguous().numpy(), "psi": self.psi.expand(y.shape[0], -1).contiguous().numpy()}
            return torch.from_numpy(self._session.run(None, feed)[0])  # (B, 3, S, S)
        return self.G.render(GenInputs(y, self.psi.expand(y.shape[0], -1))).image.float()  # (B, 3, S, S)

    def landmark_images(self, points) -> torch.Tensor:
        """(B, 68, 2) landmarks in crop pixels -> (B, 3, S, S) landmark images (paper §3.1 colours)."""
        from talkinghead.landmarks.rasterize import landmark_image_tensor

        pts = np.asarray(points, np.float32)
        if pts.ndim == 2:
            pts = pts[None]
        return landmark_image_tensor(pts, self.image_size)

    @torch.no_grad()
    def render_points(self, points, full_size: bool = False) -> torch.Tensor:
        """(B, 68, 2) landmarks in crop pixels -> (B, 3, S, S) frames in [-1, 1]. The warp-guided G moves the
        avatar's source texture along the landmark flow from each pose to the source's.

        full_size: frames of `output_size` (R) instead: the warp-guided G's flow, upsampled, moves the source
        image's own pixels at R (no output blurrier than its source); only the network's correction of them is
        upsampled from S (`compose_full`). The paper's G has nothing at R (R = S): its S frames are returned.
        The region generators then fill the mouth's hole and closing eyes at the frames' own size."""
        out = self.generate(self.prepare(points))
        if not full_size or self.output_size == self.image_size:
            frames = out.image.float()  # (B, 3, S, S)
        else:
            frames = self.compose_full(out).float()  # (B, 3, R, R)
        return self.fill_regions(frames, points)

    def fill_regions(self, frames: torch.Tensor, points) -> torch.Tensor:
        """Frames (B, 3, R, R) rendered for landmarks (B, 68, 2) in crop pixels -> the same with the driving
        mouth's hole and closing eyes filled by the region generators (none: the frames as they are)."""
        for fill in self.regions:
            frames = fill.fill(frames, points, self.avatar.source_points[None])
        return frames

    def prepare(self, points) -> GenInputs:
        """(B, 68, 2) landmarks in crop pixels -> G's inputs: landmark images (B, 3, S, S), ψ and, for a G that
        needs a texture, the avatar's source with the landmark flow grids from each pose to it (B, S, S, 2)."""
        y = self.landmark_images(points)
        if self.source is None:
            return GenInputs(y.to(self.device, self.dtype), self.psi.expand(y.shape[0], -1))
        from talkinghead.landmarks.warp import texture_sources

        pts = np.asarray(points, np.float32).reshape(-1, 68, 2)
        _, grids = texture_sources(self.avatar.source_points[None], pts, self.image_size,
                                   index=[0] * len(pts))  # (B, S, S, 2) to the one source
        texture = replace(self.source, grid=grids.to(self.device, self.dtype))
        return GenInputs(y.to(self.device, self.dtype), self.psi, texture)

    @torch.no_grad()
    def generate(self, inp: GenInputs) -> GenOutput:
        """G on prepared inputs (`prepare`) -> its GenOutput at S."""
        if self._frozen is not None and inp.y.shape[0] == 1:
            return self._frozen(inp.y, inp.texture.grid)
        if self._session is not None:
            return GenOutput(self.render(inp.y))
        return self.G.render(inp)

    def compose_full(self, out) -> torch.Tensor:
        """A warp-guided G's GenOutput at S -> (B, 3, R, R): warp(source_R, grid_R) + (1 − mask_R)·(generated − warped)_R —
        the photo's own pixels moved at R, plus the network's correction of them upsampled from S (at S this is
        exactly mask·warped + (1 − mask)·generated, since generated = warped + Δ)."""
        import torch.nn.functional as F

        from talkinghead.nn.motion import grid_units_at_size, warp

        r, s = self.output_size, out.grid.shape[1]
        b = out.image.shape[0]
        fields = torch.cat([out.grid.permute(0, 3, 1, 2), out.mask, out.generated - out.warped], 1)  # (B,6,S,S)
        up = F.interpolate(fields, size=(r, r), mode="bilinear", align_corners=False)  # (B, 6, R, R), one pass
        grid = grid_units_at_size(up[:, :2], s, r).permute(0, 2, 3, 1)  # (B, R, R, 2): motion.grid_at_size
        warped = warp(self.source_full.expand(b, -1, -1, -1), grid)  # (B, 3, R, R)
        return torch.addcmul(warped, 1 - up[:, 2:3], up[:, 3:]).clamp_(-1, 1)  # warped + (1 − mask)·correction


def _frozen_render(animator: Animator, bf16: bool = False):
    """The warp-guided G's render for one frame, (y (1, 3, S, S), grid (1, S, S, 2)) -> GenOutput, traced with
    the animator's ψ, source and source features as constants and frozen (conv + bias folding, no Python
    between the ops); bf16: traced under CPU autocast to bfloat16 (the casts are recorded in the trace)."""
    import contextlib

    from talkinghead.landmarks.warp import flow_grid

    class OneFrame(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.G = animator.G

        def forward(self, y, grid):
            return self.G.render(GenInputs(y, animator.psi, replace(animator.source, grid=grid))).tensors()

    pts = animator.avatar.source_points
    y = animator.landmark_images(pts).to(animator.device, animator.dtype)
    grid = flow_grid(pts, pts, animator.image_size)[None].to(animator.device, animator.dtype)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape checks (fixed at one frame)
        with autocast:
            traced = torch.jit.trace(OneFrame().eval(), (y, grid), check_trace=False)
        frozen = torch.jit.freeze(traced)

    def render(y: torch.Tensor, grid: torch.Tensor) -> GenOutput:
        with torch.no_grad():
            return GenOutput(*(t.float() for t in frozen(y, grid)))

    return render


def _onnx_session(G: torch.nn.Module, psi: torch.Tensor, size: int):
    """ONNX Runtime session for G with inputs y (B, 3, S, S), psi (B, P) -> x (B, 3, S, S); None (and a
    warning) when onnxruntime or onnx is missing. Exported in memory with the TorchScript exporter (opset 17);
    intra-op threads = torch's; threads wait without spinning (2 shared cores: a spinning pool steals them)."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime as ort
    except ImportError:
        log.warning("backend 'onnx' needs the optional packages onnxruntime and onnx "
                    "(pip install 'talkinghead[fast]'); rendering with torch")
        return None
    y = torch.zeros(1, 3, size, size)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation, tracer and instance-norm notes
        torch.onnx.export(G, (y, psi[:1]), buf, dynamo=False, opset_version=17, input_names=["y", "psi"],
                          output_names=["x"], dynamic_axes={"y": {0: "batch"}, "psi": {0: "batch"},
                                                            "x": {0: "batch"}})
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
