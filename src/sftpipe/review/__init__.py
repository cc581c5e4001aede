"""Blind pairwise review of two runs' replies by people: the session store (SQLite), the page (FastAPI), exports
to DPO pairs and eval's human rubric, and agreement statistics. The stage is `sftpipe.stages.review`."""
