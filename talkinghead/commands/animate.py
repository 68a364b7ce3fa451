from talkinghead.animate_cli import add_arguments, run  # noqa: F401  (moved here next)
