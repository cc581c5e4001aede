"""sftpipe: from raw chat transcripts to a fine-tuned, evaluated, servable chat model."""

__version__ = "0.1.0"
