"""One module per CLI command (`talkinghead NAME` runs `talkinghead.commands.NAME`): each has
`add_arguments(parser)` and `run(args) -> int` and nothing else of substance — the work is in the library."""
