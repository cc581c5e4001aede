"""Harbor Support synthetic data: a seeded raw export with known noise, policy assets, and eval prompt sets."""

from .generate import SIZES, GenerateResult, generate
from .policy import check_reply, check_thread

__all__ = ["SIZES", "GenerateResult", "generate", "check_reply", "check_thread"]
