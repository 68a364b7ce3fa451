"""The web app of `talkinghead serve`: the studio (jobs over the library) and the Gradio page."""
