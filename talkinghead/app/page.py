"""The Gradio page of `talkinghead serve` over a `Studio` (talkinghead.app.studio): `build_app` lays out the
page; its handlers turn every TalkingHeadError (no face, an unreadable video) into a message in the page
(gr.Error) and the library's tqdm bars into the page's progress bar. The Live tab streams the browser's webcam
through the studio's `LivePuppet`, each frame marked (`watermark.embed`). One job runs at a time per server,
render jobs and live frames alike (the queue's concurrency limit), so visitors do not fight over the cores.
Each visitor is a studio session (gradio's session hash): Stop, or leaving the page, stops its job and removes
its files. `serve` keeps gradio's uploads in a folder of its own, removed when the server stops.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from talkinghead.app.limits import AppLimits
from talkinghead.app.studio import Studio, file_label, landmarks_problem
from talkinghead.console import log
from talkinghead.errors import TalkingHeadError

NEW_AVATAR = "a new avatar from the photos"
FEED_FORWARD, FINE_TUNE = "feed-forward (instant)", "fine-tune (seconds; gains with more photos)"
RELATIVE, ABSOLUTE = "relative (the driver's motion on this face)", "absolute (the driver's landmarks as they are)"
PASTE_BACK, CROP = "pasted back into the photo", "the face crop only"
VOICES = ["en", "en-us", "fr", "de", "es", "it", "pt", "nl", "pl", "ru", "cmn", "ja"]  # espeak-ng voices offered
MONA_LISA = "the Mona Lisa (feed-forward)"


def _files(value) -> list[str]:
    """A gr.File value (None, a path, or a list of paths) -> paths."""
    if not value:
        return []
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _server_folders(studio: Studio) -> list[str]:
    """Folders whose paths mean nothing to a visitor: gradio's uploads and the studio's outputs."""
    from gradio.utils import get_upload_folder

    return [str(Path(get_upload_folder()).resolve()), str(studio.workdir.resolve())]


def for_page(message: str, folders: list[str]) -> str:
    """`message` with the files under `folders` named by their file names only (an upload's path is
    /tmp/gradio/<hash>/photo.jpg on the server; the visitor knows it as photo.jpg)."""
    for folder in folders:
        message = re.sub(re.escape(folder.rstrip("/")) + r"/(?:[^/\s]+/)*", "", message)
    return message


def _page_errors(fn, folders: list[str]):
    """Runs fn; a TalkingHeadError becomes a message in the page, anything else one line too (the
    traceback goes to the server's log only)."""
    import functools

    import gradio as gr

    @functools.wraps(fn)
    def wrapped(*args, **kw):
        try:
            return fn(*args, **kw)
        except TalkingHeadError as e:
            raise gr.Error(for_page(str(e), folders), print_exception=False) from None
        except gr.Error:
            raise
        except Exception as e:  # a bug: say so in one line, keep the traceback for the log
            log.exception("web app: unexpected error")
            raise gr.Error(f"unexpected error ({type(e).__name__}: {str(e)[:200]}); the server's log has "
                           "the details", print_exception=False) from None
    return wrapped


def _with_request(fn):
    """fn, its `request` parameter typed as gradio's gr.Request so that gradio passes the request in (the
    string annotations of this module name nothing gradio can resolve)."""
    import gradio as gr

    fn.__annotations__["request"] = gr.Request
    return fn


def _session(request) -> str:
    return getattr(request, "session_hash", None) or "local"


def _preview_handler(studio: Studio, folders: list[str]):
    """The landmarks preview of the photos (or of a chosen avatar's crop): [(image, caption)]."""
    import gradio as gr

    @_with_request
    def previews(photos, landmarks_file, choice, avatars, request=None):
        if choice != NEW_AVATAR and choice in avatars:
            from talkinghead.persons.avatar import Avatar
            from talkinghead.landmarks.rasterize import draw_landmarks

            av = Avatar.load(avatars[choice])
            k = max(1, 384 // av.source_crop.shape[0])  # the S² crop enlarged, so that the points stay apart
            crop = np.kron(av.source_crop, np.ones((k, k, 1), np.uint8))
            return [(draw_landmarks(crop, (av.source_points + 0.5) * k - 0.5), f"avatar: {choice}")]
        photos = studio.photos(_files(photos), _session(request))
        if landmarks_file and len(photos) > 1:
            gr.Warning(f"{file_label(landmarks_file)} holds the landmarks of one photo: upload only that photo with it")
            landmarks_file = None
        shown, missing = [], []
        for photo in photos:
            try:
                shown.append(studio.landmarks_preview(photo, landmarks_file, _session(request)))
            except TalkingHeadError as e:
                from talkinghead.media.image_files import read_image

                missing.append(for_page(str(e), folders))
                try:
                    shown.append((read_image(photo), f"{file_label(photo)}: no face"))
                except TalkingHeadError:
                    pass
        problem = landmarks_problem(landmarks_file)
        if missing and problem:
            gr.Warning(f"{missing[0]}: upload a corrected landmarks file (`talkinghead landmarks PHOTO -o FILE.pts` "
                       "writes one to correct)")
        elif missing:
            gr.Warning(f"{missing[0]}: upload its 68 landmarks as a .pts file (`talkinghead landmarks PHOTO -o "
                       "FILE.pts` writes one to correct)")
        elif problem:
            gr.Warning(f"{for_page(problem, folders)}: the detected landmarks are shown instead")
        return shown

    return previews


def _job_handlers(studio: Studio):
    """(animate, stop, leave): a render job of this browser session, stopping it, ending the session."""
    import gradio as gr

    @_with_request
    def animate(photos, landmarks_file, choice, driving, speech, say, voice, mode, steps, motion, framing, sbs,
                avatars, request=None, progress=gr.Progress(track_tqdm=True)):
        reuse = avatars.get(choice) if choice != NEW_AVATAR else None
        progress(0, desc="loading the avatar" if reuse else "finding the face")
        job = studio.animate(driving, photos=_files(photos), landmarks_file=None if reuse else landmarks_file,
                             avatar_path=reuse, fine_tune=mode == FINE_TUNE, steps=int(steps),
                             absolute=motion == ABSOLUTE, crop_only=framing == CROP, side_by_side=bool(sbs),
                             session=_session(request), speech=speech or None, say=say or None, voice=voice)
        avatars = {k: v for k, v in avatars.items() if Path(v).exists()}  # the studio keeps the last few
        if job.avatar_name:
            avatars[job.avatar_name] = str(job.avatar)
        choices = [NEW_AVATAR, *avatars]
        return (str(job.video), [str(job.video), str(job.avatar)], job.summary, avatars,
                gr.Dropdown(choices=choices, value=choice))

    @_with_request
    def stop(request=None):
        studio.stop(_session(request))

    @_with_request
    def leave(request=None):
        studio.end_session(_session(request))

    return animate, stop, leave


def _live_handlers(studio: Studio):
    """(live_frame, live_recalibrate): one webcam frame through the session's LivePuppet, marked."""
    import gradio as gr

    def live_frame(frame, choice, motion, framing, avatars, state):
        from talkinghead.media.watermark import embed

        if frame is None:
            return gr.skip(), state
        key = (choice, motion, framing)
        if state is None or state["key"] != key:
            puppet = studio.live_puppet(avatars.get(choice), absolute=motion == ABSOLUTE,
                                        crop_only=framing == CROP)
            state = {"key": key, "puppet": puppet}
        return embed(state["puppet"].process(np.ascontiguousarray(frame[:, :, :3]))), state

    def live_recalibrate(state):
        if state is not None:
            state["puppet"].recalibrate()
        return state

    return live_frame, live_recalibrate


def _animate_tab(studio: Studio) -> SimpleNamespace:
    """The Animate tab's components (inside a gr.Blocks)."""
    import gradio as gr

    with gr.Row(equal_height=False):
        with gr.Column():
            gr.Markdown("**1 · Who talks**")
            choice = gr.Dropdown([NEW_AVATAR], value=NEW_AVATAR, label="Avatar", elem_id="avatar",
                                 info="avatars made in this session can be animated again")
            photos = gr.File(label="Photos of one person", file_count="multiple", file_types=["image"],
                             elem_id="photos", height=120)
            monalisa = gr.Button("Use the Mona Lisa", size="sm", elem_id="use-monalisa")
            landmarks_file = gr.File(label="Landmarks of one photo (.pts/.json), if none are found",
                                     file_types=[".pts", ".json"], elem_id="pts", height=140)
            preview = gr.Gallery(label="Landmarks", columns=2, height="auto", elem_id="landmarks",
                                 preview=False, interactive=False, object_fit="contain")
        with gr.Column():
            gr.Markdown("**2 · The driving video**")
            driving = gr.Video(label="Driving video (upload or record)", sources=["upload", "webcam"],
                               elem_id="driving", height=300)
            clip = gr.Button("Use the bundled clip", size="sm", elem_id="use-clip")
            with gr.Accordion("…or speech drives the mouth", open=False, elem_id="speech-box"):
                gr.Markdown("With speech and no driving video the head moves and blinks as a real speaker's does; "
                            "with a driving video the pose and eyes are the driver's and the mouth the speech's.")
                speech = gr.Audio(label="Speech (upload or record)", sources=["upload", "microphone"],
                                  type="filepath", elem_id="speech")
                say = gr.Textbox(label="…or a sentence to say", placeholder="Bonjour, je suis la Joconde",
                                 max_lines=3, elem_id="say")
                voice = gr.Dropdown(VOICES, value="en", label="Voice (language)", elem_id="voice",
                                    allow_custom_value=True)
            gr.Markdown("**3 · Options**")
            mode = gr.Radio([FEED_FORWARD, FINE_TUNE], value=FEED_FORWARD, label="Avatar", elem_id="mode")
            steps = gr.Slider(1, 1000, value=studio.default_steps, step=1, label="Fine-tuning steps",
                              visible=False, elem_id="steps")
            motion = gr.Radio([RELATIVE, ABSOLUTE], value=RELATIVE, label="Motion", elem_id="motion")
            framing = gr.Radio([PASTE_BACK, CROP], value=PASTE_BACK, label="Output", elem_id="framing")
            sbs = gr.Checkbox(label="side by side: driver | result", elem_id="sbs")
            with gr.Row():
                go = gr.Button("Animate", variant="primary", elem_id="animate")
                halt = gr.Button("Stop", variant="stop", elem_id="stop")
        with gr.Column():
            gr.Markdown("**Result**")
            result = gr.Video(label="Result", interactive=False, autoplay=True, elem_id="result",
                              height=420)
            summary = gr.Markdown(elem_id="summary")
            downloads = gr.File(label="Downloads: the video and the avatar", file_count="multiple",
                                interactive=False, elem_id="downloads")
    return SimpleNamespace(**{k: v for k, v in locals().items() if k not in ("gr", "studio")})


def _live_tab() -> SimpleNamespace:
    """The Live tab's components (inside a gr.Blocks)."""
    import gradio as gr

    gr.Markdown("Your webcam drives the avatar frame by frame (its motion relative to the first frame "
                "with a face). In the browser this runs at a few frames per second; `talkinghead live` "
                "renders in real time.")
    with gr.Row(equal_height=False):
        with gr.Column():
            live_choice = gr.Dropdown([MONA_LISA], value=MONA_LISA, label="Avatar", elem_id="live-avatar",
                                      info="the Mona Lisa, or an avatar made in the Animate tab")
            live_motion = gr.Radio([RELATIVE, ABSOLUTE], value=RELATIVE, label="Motion")
            live_framing = gr.Radio([PASTE_BACK, CROP], value=PASTE_BACK, label="Output")
            recalibrate = gr.Button("Take the next frame as the neutral pose", size="sm")
        with gr.Column():
            camera = gr.Image(label="Webcam", sources=["webcam"], streaming=True, type="numpy",
                              elem_id="camera", height=360)
        with gr.Column():
            live_out = gr.Image(label="Live", interactive=False, elem_id="live-out", format="jpeg",
                                height=360)
    return SimpleNamespace(**{k: v for k, v in locals().items() if k != "gr"})


def build_app(studio: Studio):
    """The gr.Blocks page over `studio` (not launched)."""
    import gradio as gr

    from talkinghead import bundled

    folders = _server_folders(studio)
    previews = _preview_handler(studio, folders)
    animate, stop, leave = _job_handlers(studio)
    live_frame, live_recalibrate = _live_handlers(studio)
    age = 60 * studio.limits.cache_minutes  # gradio's copies of uploads and results this old are deleted
    with gr.Blocks(title="talkinghead", analytics_enabled=False, delete_cache=(max(60, age // 4), age)) as app:
        avatars = gr.State({})  # this browser session's avatars: name -> .avatar path
        gr.Markdown("## talkinghead — make a portrait talk like the person in a driving video\n"
                    "Every video it makes is marked as synthetic. Use faces you have the right to use.")
        with gr.Tab("Animate"):
            a = _animate_tab(studio)
        with gr.Tab("Live"):
            v = _live_tab()
        live = gr.State(None)  # this session's LivePuppet and the settings it was made for

        v.camera.stream(_page_errors(live_frame, folders),
                        inputs=[v.camera, v.live_choice, v.live_motion, v.live_framing, avatars, live],
                        outputs=[v.live_out, live], stream_every=0.1, concurrency_limit=1, concurrency_id="render",
                        show_progress="hidden")
        v.recalibrate.click(live_recalibrate, inputs=live, outputs=live, queue=False)
        avatars.change(lambda av, c: gr.Dropdown(choices=[MONA_LISA, *av], value=c if c in av else MONA_LISA),
                       inputs=[avatars, v.live_choice], outputs=v.live_choice, queue=False)

        a.monalisa.click(lambda: [str(bundled.PORTRAIT)], outputs=a.photos, queue=False)
        a.clip.click(lambda: str(bundled.DRIVING), outputs=a.driving, queue=False)
        a.mode.change(lambda m: gr.Slider(visible=m == FINE_TUNE), inputs=a.mode, outputs=a.steps, queue=False)
        for trigger in (a.photos.change, a.landmarks_file.change, a.choice.change):
            trigger(_page_errors(previews, folders), inputs=[a.photos, a.landmarks_file, a.choice, avatars],
                    outputs=a.preview, concurrency_limit=2, concurrency_id="preview", show_progress="minimal")
        job = a.go.click(_page_errors(animate, folders),
                         inputs=[a.photos, a.landmarks_file, a.choice, a.driving, a.speech, a.say, a.voice, a.mode,
                                 a.steps, a.motion, a.framing, a.sbs, avatars],
                         outputs=[a.result, a.downloads, a.summary, avatars, a.choice],
                         concurrency_limit=1, concurrency_id="render", scroll_to_output=True,
                         show_progress_on=[a.result])
        a.halt.click(stop, cancels=[job], queue=False)
        app.unload(leave)
    app.queue(default_concurrency_limit=1)
    return app


def _check_address(host: str, port: int) -> None:
    """A one-line TalkingHeadError when http://host:port cannot be served (the port taken, no such address)."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise TalkingHeadError(f"cannot serve at {host}:{port}: {e.strerror or e} (try another --port or --host)") \
            from None


@contextlib.contextmanager
def _own_upload_folder():
    """gradio's uploads and copies of results in a new folder for this server (under $GRADIO_TEMP_DIR, or the
    system's temporary folder), removed with everything in it when the server stops."""
    import shutil
    import tempfile

    previous = os.environ.get("GRADIO_TEMP_DIR")
    base = Path(previous or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="talkinghead-gradio-", dir=base)
    os.environ["GRADIO_TEMP_DIR"] = folder
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous


def serve(host: str = "127.0.0.1", port: int = 7860, model=None, device: str = "cpu", block: bool = True,
          on_ready=None, limits: AppLimits | None = None):
    """Loads the model, builds the page and serves it at http://host:port, each visitor held to `limits`;
    on_ready(url) once it answers. block: serve until Ctrl-C/SIGTERM (then the running jobs stop, the server
    is closed, its visitors' files are removed and the interrupt goes on); else return the running gr.Blocks
    app at once (app.close() stops it; the files go at exit)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry or update checks
    import importlib.util
    import time

    if importlib.util.find_spec("gradio") is None:
        raise TalkingHeadError("the web app needs gradio: pip install 'talkinghead[app]'")

    from talkinghead import bundled

    limits = limits or AppLimits()
    _check_address(host, port)  # before the model loads
    log.info("loading the model ...")
    cleanup = contextlib.ExitStack()
    cleanup.enter_context(_own_upload_folder())  # before gradio is imported: it reads the folder then
    try:
        studio = cleanup.enter_context(contextlib.closing(Studio(model, device, limits=limits)))
        app = build_app(studio)
        try:
            app.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
                       allowed_paths=[str(bundled.ASSETS), str(studio.workdir)], footer_links=[],
                       show_error=False, max_file_size=limits.upload_bytes)
        except OSError as e:  # taken since the check
            raise TalkingHeadError(f"cannot serve at {host}:{port}: {str(e).split('. ')[0]}") from None
        cleanup.callback(app.close)  # first: no new requests while the jobs stop
    except BaseException:
        cleanup.close()
        raise
    if on_ready is not None:
        on_ready(f"http://{host}:{port}")
    if not block:
        import atexit

        atexit.register(cleanup.close)
        return app
    with cleanup:
        while True:
            time.sleep(0.5)
