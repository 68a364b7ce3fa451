from talkinghead.demo import add_arguments, run  # noqa: F401  (moved here next)
