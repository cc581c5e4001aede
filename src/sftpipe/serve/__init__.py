"""`sftpipe serve`: an OpenAI-compatible server for a run, on the shared generation engine, that renders prompts
exactly as training did (checked at start-up against run.json and parity.json).

protocol (OpenAI request / response shapes), load (the run, its template checked), app (FastAPI). Import from the
module: this package re-exports nothing, so importing it loads neither FastAPI nor transformers.
"""
