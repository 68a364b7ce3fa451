#!/usr/bin/env bash
# Creates .venv and installs talkinghead with everything it needs. Idempotent: a second run is quick.
# torch is pinned and installed first: a bare `torch` requirement in a fresh environment may pull a
# multi-GB CUDA build; users with GPUs can pre-install their own torch build into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.talkinghead-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  python -m pip install -q --upgrade pip
  python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
  python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
# the face-finding cascade's MediaPipe stage (the `mesh` extra) without mediapipe's declared dependencies: it pins
# numpy<2 and pulls jax, opencv-contrib and sounddevice, which its face mesh does not use (it runs on numpy 2);
# no wheel for this Python (3.13+): the cascade runs without that stage
if ! python -c "import mediapipe" 2>/dev/null; then
  python -m pip install -q --no-deps "mediapipe==0.10.21" absl-py attrs flatbuffers "protobuf>=4.25.3,<5" \
    || echo "setup.sh: mediapipe 0.10.21 not installable here; the face cascade runs without its mesh stage" >&2
fi
# the web app's browser test drives Debian's chromium through Playwright (`playwright install` would download
# its own browsers); installed here when missing and we may (root with apt), else that test skips with a reason
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } >/dev/null \
    || echo "setup.sh: could not install chromium; the web app's browser test will be skipped" >&2
fi
# `animate --say` speaks with Debian's espeak-ng (offline text-to-speech); installed here when missing and we may,
# else --say gives a one-line error and its tests skip
if ! command -v espeak-ng >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q espeak-ng; } >/dev/null \
    || echo "setup.sh: could not install espeak-ng; animate --say will not work" >&2
fi
