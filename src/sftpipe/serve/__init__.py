"""`sftpipe serve`: an OpenAI-compatible server for a run, on the shared generation engine, that renders prompts
exactly as training did (checked at start-up against run.json and parity.json)."""

from .app import build_app, create_app
from ..config.serve import ServeConfig
from .load import Served, load_served
from .protocol import ApiError, ChatParams, decode_request, encode_chunk, encode_response

__all__ = ["ApiError", "ChatParams", "ServeConfig", "Served", "build_app", "create_app", "decode_request",
           "encode_chunk", "encode_response", "load_served"]
