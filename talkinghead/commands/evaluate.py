from talkinghead.evaluate import add_arguments, run  # noqa: F401  (moved here next)
