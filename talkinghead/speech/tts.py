"""Text → speech offline with espeak-ng (DESIGN.md §5; Debian's `espeak-ng` package, which scripts/setup.sh
installs): `--say "TEXT" [--voice fr]` writes a wav that then drives the mouth like any recording."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from talkinghead.errors import TalkingHeadError

MAX_CHARS = 2000


class SpeechSynthesisError(TalkingHeadError):
    """Text that cannot be spoken: no letters, too long, an unknown voice, espeak-ng missing or failing."""


def espeak_binary() -> str:
    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if exe is None:
        raise SpeechSynthesisError("--say needs espeak-ng (Debian/Ubuntu: apt-get install espeak-ng; macOS: brew "
                                   "install espeak-ng), or give a recording with --audio")
    return exe


def voices() -> list[str]:
    """The voice (language) names espeak-ng knows, e.g. 'en', 'fr', 'en-us'."""
    out = subprocess.run([espeak_binary(), "--voices"], capture_output=True, text=True, timeout=30).stdout
    names = set()
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:
            names.add(cols[1])
            names.add(cols[4].split("/")[-1])
    return sorted(names)


def check_text(text: str) -> str:
    text = " ".join(str(text).split())
    if not any(ch.isalpha() for ch in text):
        raise SpeechSynthesisError("--say: the text has no letters to speak")
    if len(text) > MAX_CHARS:
        raise SpeechSynthesisError(f"--say: the text is {len(text)} characters long (at most {MAX_CHARS})")
    return text


def synthesize(text: str, out_wav, voice: str = "en", words_per_minute: int = 150) -> Path:
    """Speaks `text` with espeak-ng's `voice` into `out_wav` (22 kHz mono wav)."""
    text = check_text(text)
    exe = espeak_binary()
    if voice not in voices():
        raise SpeechSynthesisError(f"--voice {voice}: espeak-ng has no such voice (e.g. en, en-us, fr, de, es, it)")
    out_wav = Path(out_wav)
    try:
        res = subprocess.run([exe, "-v", voice, "-s", str(words_per_minute), "-w", str(out_wav), "--", text],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SpeechSynthesisError(f"espeak-ng failed: {e}") from None
    if res.returncode != 0 or not out_wav.is_file() or out_wav.stat().st_size < 1000:
        raise SpeechSynthesisError(f"espeak-ng failed: {' '.join(res.stderr.split())[:200] or 'no audio written'}")
    return out_wav
