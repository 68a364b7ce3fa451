"""`talkinghead evaluate`: the paper's evaluation protocol on our data (paper §4 "self-reenactment", DESIGN.md §6),
with the classical baselines scored in the same run on the same frames.

Self-reenactment (paper §4): for every validation video of the split, T ∈ shots frames taken from the *first*
part of the video (the first `SHOT_PART` of its preprocessed frames, evenly spread; the T-shot sets are nested
and all start at the first frame), and hold-out target frames from the *last* part (the last `TARGET_PART`,
evenly spread; never overlapping the shot part). Each target is rendered from its own ground-truth landmarks
(absolute, in its crop's pixels) by
- copy: the first shot unchanged (baselines.copy_source),
- warp: the first shot warped piecewise-affinely from its landmarks to the target's (baselines.warp_baseline),
- teeth_bank (with --teeth-bank FILE): the warp with an opening mouth filled from other people's training
        mouths nearest in inner-lip shape (baselines.teeth_bank_baseline, teeth_bank.TeethBank),
- ff:   G with ψ̂ = P·ê, ê = mean of E over the T shots (paper §3.3 feed-forward),
- ft:   G' and ψ' fine-tuned on the T shots (paper §3.3; train.finetune.finetune_generator).
The warp-guided G (model.generator = "warp", DESIGN.md §2) draws each target (FF and FT) from the texture of the
shot nearest to it in pose (landmarks.warp.nearest_pose), moved by the landmark flow from the target's landmarks to
that shot's: more shots, nearer textures (rows list them as texture_frames). Every render is scored against the
ground-truth frame by the metrics registry (talkinghead.metrics): SSIM, PSNR, LPIPS-like, CSIM (to the ground
truth), AKD + no-face rate (vs the target's landmarks) per frame, FID per method × T over all videos' targets (set
level; strongly biased below a few hundred frames, flagged as unreliable).
The baselines use the first shot only, so their values do not depend on T (they are listed per T anyway).
Two subsets of the targets are scored again with the region metrics (evaluation.subsets): where the mouth opens
over a closed texture shot (the mouth metric) and where the eyes close over open ones (the same on the eyes).

Cross-identity (DESIGN.md §2): source video a's avatars driven by video b's target frames (a, b of different
identities), the driver's motion retargeted relative to its most neutral frame onto a's first shot
(landmarks.retarget; the warp G draws from a's shot nearest to each retargeted pose); CSIM to a's first shot
(the source identity) and AKD to the retargeted landmarks.

Output (a run folder, DESIGN.md §4): REPORT_DIR/results.jsonl (appended: one line per video × method × T ×
protocol, plus FID lines), report.md (tables of means over videos), config.json, metrics_vs_T.png,
examples.png (shots | driver | methods | ground truth), cross_examples.png; the preprocessed validation
crops are cached (resumable) under REPORT_DIR/cache or --cache.

Modules: settings (EvalSettings, the protocol's constants), data (videos, shot/target split), renders (the
few-shot models, the warp G's textures, the baselines), subsets (open mouth, closing eyes), protocol (the steps
and `evaluate`), report (aggregation, Markdown, verdict), plots (figures). The command line is
talkinghead/commands/evaluate.py.
"""

from talkinghead.evaluation.data import EvalVideo, split_video
from talkinghead.evaluation.protocol import evaluate
from talkinghead.evaluation.settings import ALL_METRICS, BASELINES, MODES, SHOT_PART, TARGET_PART, EvalSettings

__all__ = ["ALL_METRICS", "BASELINES", "MODES", "SHOT_PART", "TARGET_PART", "EvalSettings", "EvalVideo", "evaluate",
           "split_video"]
