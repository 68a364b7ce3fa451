"""Cuts the demo's driving clip (talkinghead/assets/driving.mp4) out of pexels_woman.mp4 with PyAV.

    .venv/bin/python scripts/make_demo_clip.py ../shared/data/videos/pexels_woman.mp4 talkinghead/assets/driving.mp4

Video: frames [start, start + seconds) re-encoded as H.264 (crf 27); audio: the same span re-encoded as AAC.
"""

from __future__ import annotations

import argparse

import av


def cut(src: str, dst: str, start: float, seconds: float, crf: int = 27) -> None:
    end = start + seconds
    with av.open(src) as inp, av.open(dst, "w", format="mp4") as out:
        vin = inp.streams.video[0]
        rate = vin.average_rate
        vout = out.add_stream("libx264", rate=rate)
        vout.width, vout.height = vin.codec_context.width, vin.codec_context.height
        vout.pix_fmt = "yuv420p"
        vout.options = {"crf": str(crf), "preset": "slow"}
        ain = inp.streams.audio[0] if inp.streams.audio else None
        aout = None
        if ain is not None:
            aout = out.add_stream("aac", rate=ain.codec_context.sample_rate)
            aout.bit_rate = 96_000
        n = 0
        for frame in inp.decode(vin):
            if frame.time is None or frame.time < start - 1e-6:
                continue
            if frame.time >= end - 1e-6:
                break
            f = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            f.pts = n
            f.time_base = 1 / rate
            out.mux(vout.encode(f))
            n += 1
        out.mux(vout.encode(None))
        if ain is not None:
            inp.seek(int(max(start - 1, 0) / ain.time_base), stream=ain)
            resampler = av.AudioResampler(format="fltp", layout=ain.codec_context.layout.name,
                                          rate=ain.codec_context.sample_rate)
            for frame in inp.decode(ain):
                if frame.time is None or frame.time < start:
                    continue
                if frame.time >= start + n / float(rate):
                    break
                for rf in resampler.resample(frame):
                    rf.pts = None
                    out.mux(aout.encode(rf))
            out.mux(aout.encode(None))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--start", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--crf", type=int, default=27)
    a = p.parse_args()
    cut(a.src, a.dst, a.start, a.seconds, a.crf)
