"""Stages: one module per CLI verb, each a readable top-to-bottom `run(...) -> Result` that composes the library,
plus `show` (all presentation: its tables in `show_tables`, the Trainer's progress bar in `show_train`). To add a
stage, write `stages/<verb>.py` and its library package; read and write runs through `sftpipe.runs`."""
