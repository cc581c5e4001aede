"""One generation engine for eval and serving: prompts rendered with the run's renderer (control strings in content
kept as text), batched decoding on a KV cache that admits new requests as others finish (continuous batching),
stops on end-of-turn ids and user stop strings, greedy or seeded sampling."""

from .batch import Generation, GenerationStats, generate
from .engine import Engine, Request
from .stops import find_stop, safe_length, stop_token_ids
from .worker import QueueFull, Worker

__all__ = ["Engine", "Generation", "GenerationStats", "QueueFull", "Request", "Worker", "find_stop", "generate",
           "safe_length", "stop_token_ids"]
