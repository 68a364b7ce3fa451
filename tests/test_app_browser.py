"""`talkinghead serve` in a real browser: Playwright drives Debian's chromium (headless) through the web app as a
visitor would — the Mona Lisa and the bundled clip uploaded, feed-forward, the result played in the page and
fetched from it; a photo without a face and an unreadable video answered by messages in the page, a .pts file
standing in for the missing landmarks; the Live tab driven by chromium's fake webcam.

Chromium comes from the system (scripts/setup.sh installs Debian's `chromium` as root), never from
`playwright install`; without one the test is skipped with the reason. TALKINGHEAD_APP_SCREENSHOT=docs/app.png
also writes the page with its result there (the README's screenshot).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from talkinghead import bundled

from talkinghead.media import video

from talkinghead.media import mark_files, watermark

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium found on PATH (scripts/setup.sh installs Debian's "
                       "`chromium` when run as root; Playwright's own browser download is not used)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`talkinghead serve` on a free port (the bundled model), its uploads in a temporary folder -> URL."""
    port = _free_port()
    tmp = tmp_path_factory.mktemp("app")
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp / "gradio"), "OPENBLAS_NUM_THREADS": "1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(tmp / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "talkinghead", "serve", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"talkinghead serve exited with {proc.returncode}:\n{(tmp / 'serve.log').read_text()}")
            try:
                urllib.request.urlopen(url, timeout=5).read(100)
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail("talkinghead serve did not answer within 180 s")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        server_log = (tmp / "serve.log").read_text()
        assert "Traceback" not in server_log, server_log


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless chromium whose webcam plays the first 48 frames of the bundled clip (a y4m file, looped)."""
    import av

    camera = tmp_path_factory.mktemp("camera") / "camera.y4m"
    with av.open(str(camera), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=24)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        for frame in video.iter_frames(bundled.DRIVING, max_frames=48):
            small = np.asarray(Image.fromarray(frame).resize((320, 180), Image.BILINEAR))
            out.mux(stream.encode(av.VideoFrame.from_ndarray(small, format="rgb24")))
        out.mux(stream.encode())
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
    page.goto(server)
    page.wait_for_selector("#animate")
    yield page
    page.close()


def _toast(page, text: str):
    return page.locator(".toast-body").filter(has_text=text)


def test_mona_lisa_driven_by_the_bundled_clip(page, tmp_path):
    page.locator("#photos input[type=file]").set_input_files(str(bundled.PORTRAIT))
    page.locator("#driving input[type=file]").set_input_files(str(bundled.DRIVING))
    # the detected landmarks, drawn on the photo
    expect(page.locator("#landmarks").get_by_text("monalisa.jpg", exact=True)).to_be_visible(timeout=60_000)
    page.click("#animate")
    page.wait_for_selector("#result video[src]", timeout=240_000)

    # the page's player can play it: metadata read, no media error, the clip's length
    page.wait_for_function("() => { const v = document.querySelector('#result video');"
                           " return v && v.readyState >= 1 && v.videoWidth > 0 && !v.error; }", timeout=30_000)
    duration = page.evaluate("() => document.querySelector('#result video').duration")
    driver = video.probe_video(bundled.DRIVING)
    assert abs(duration - driver.duration) < 0.5

    # the file behind it: an mp4 with the driver's frame count, every frame decodable
    src = page.locator("#result video").get_attribute("src")
    out = tmp_path / "result.mp4"
    out.write_bytes(urllib.request.urlopen(src, timeout=30).read())
    info = video.probe_video(out)
    assert info.num_frames == driver.num_frames
    assert sum(1 for _ in video.iter_frames(out)) == driver.num_frames
    assert abs(info.fps - driver.fps) < 1e-3
    assert mark_files.detect_file(out, max_frames=8).marked  # what the page serves is marked as synthetic
    downloads = page.locator("#downloads").inner_text().replace("\n", "")  # name and suffix in two spans
    assert "monalisa_ff_talking.mp4" in downloads and "monalisa_ff.avatar" in downloads
    assert f"{driver.num_frames} frames" in page.locator("#summary").inner_text()
    # the screenshot of the README: a frame from the middle of the clip in the player
    page.evaluate("() => new Promise(done => { const v = document.querySelector('#result video'); v.pause();"
                  " v.addEventListener('seeked', done, {once: true}); v.currentTime = 2.4; })")
    shot = page.screenshot(full_page=False)
    Image.open(io.BytesIO(shot)).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(
        tmp_path / "app.png", optimize=True)
    target = os.environ.get("TALKINGHEAD_APP_SCREENSHOT")
    if target:
        shutil.copyfile(tmp_path / "app.png", target)
    # the avatar can be animated again in this session
    page.get_by_role("combobox", name="Avatar").click()
    expect(page.get_by_role("option", name="monalisa, FF, 1 photo")).to_be_visible()
    page.keyboard.press("Escape")

@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="no espeak-ng (scripts/setup.sh installs it as root)")
def test_mona_lisa_says_a_sentence(page, tmp_path):
    """No driving video: a sentence typed in the page is spoken (espeak-ng) and drives her mouth; the result
    carries the speech and the mark."""
    page.click("#use-monalisa")
    page.locator("#speech-box").click()
    page.locator("#say textarea").fill("Hello, I am the Mona Lisa.")
    page.click("#animate")
    page.wait_for_selector("#result video[src]", timeout=240_000)
    src = page.locator("#result video").get_attribute("src")
    out = tmp_path / "says.mp4"
    out.write_bytes(urllib.request.urlopen(src, timeout=30).read())
    info = video.probe_video(out)
    assert info.has_audio and 1.0 < info.duration < 5.0
    assert mark_files.detect_file(out, max_frames=8).marked
    assert "Traceback" not in page.content()


def test_errors_show_in_the_page(page, tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((360, 320, 3), 128, np.uint8)).save(grey)
    page.locator("#photos input[type=file]").set_input_files(str(grey))
    expect(_toast(page, "no face found in grey.png: upload its 68 landmarks")).to_be_visible(timeout=60_000)
    page.click("#use-clip")
    page.click("#animate")
    expect(_toast(page, "no face found in grey.png").filter(has_not_text="upload")).to_be_visible(timeout=60_000)
    # its landmarks given in a .pts file replace detection: drawn on the photo
    from talkinghead.landmarks.manual import mean_shape, write_pts

    write_pts(tmp_path / "grey.pts", mean_shape() * 100 + (160, 170))
    page.locator("#pts input[type=file]").set_input_files(str(tmp_path / "grey.pts"))
    expect(page.locator("#landmarks").get_by_text("grey.png (grey.pts)")).to_be_visible(timeout=60_000)

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    page.reload()
    page.wait_for_selector("#animate")
    page.click("#use-monalisa")
    page.locator("#driving input[type=file]").set_input_files(str(broken))
    page.click("#animate")
    expect(_toast(page, "broken.mp4")).to_be_visible(timeout=60_000)
    assert "Traceback" not in page.content()
    expect(page.locator("#result video")).to_have_count(0)


def test_live_tab_drives_the_mona_lisa_from_the_webcam(page):
    """The Live tab streams the (fake) webcam to the server and shows the Mona Lisa moving with it."""
    page.get_by_role("tab", name="Live").click()
    page.get_by_text("Click to Access Webcam").click()
    page.locator("#camera button").filter(has_text="Record").first.click()
    page.wait_for_selector("#live-out img", timeout=120_000)
    seen: list[str] = []
    deadline = time.time() + 60
    while len(seen) < 6 and time.time() < deadline:
        src = page.locator("#live-out img").get_attribute("src")
        if src and (not seen or seen[-1] != src):
            seen.append(src)
        time.sleep(0.05)
    page.locator("#camera button").filter(has_text="Stop").first.click()
    assert len(seen) >= 6, f"{len(seen)} live frames in 60 s"
    first, last = (np.asarray(Image.open(io.BytesIO(urllib.request.urlopen(s, timeout=30).read())).convert("RGB"),
                              np.float32) for s in (seen[1], seen[-1]))
    assert first.shape == last.shape and first.shape[0] == 720  # the painting scaled to 720 px
    assert watermark.detect(last.astype(np.uint8)).marked  # each live frame is marked, through the browser's JPEG
    assert np.abs(first - last).mean() > 0.5  # she moves (measured: ~2 grey levels over the whole painting)
