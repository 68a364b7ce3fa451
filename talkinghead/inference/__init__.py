"""Inference: the Animator (tensors in, frames out) and the video pipeline (a video in, an mp4 out)."""
