"""Files that ship inside the package: the default model, the face-descriptor weights and the demo media."""

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
WEIGHTS = PACKAGE / "weights"
ASSETS = PACKAGE / "assets"

MODEL = WEIGHTS / "model_warp.safetensors"  # the default model of finetune, animate, evaluate and the demo
SPEECH_MODEL = WEIGHTS / "speech.safetensors"  # the speech → mouth model of animate --audio/--say
PORTRAIT = ASSETS / "monalisa.jpg"  # the demo's portrait
DRIVING = ASSETS / "driving.mp4"  # the demo's driving clip (with audio)
