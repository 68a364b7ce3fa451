from talkinghead.data.preprocess import add_arguments, run  # noqa: F401  (moved here next)
