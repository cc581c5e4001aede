"""The one client for OpenAI-compatible `/chat/completions` endpoints (curate's quality judge, eval's pairwise
judge): one user message in, the reply text out, with a timeout per request and retries.

A connection failure, a timeout, HTTP 429 and HTTP 5xx are retried `retries` times with exponential backoff
(`backoff_s * 2 ** (k - 1)` before retry k, at most 8 s); another HTTP error is not. When every attempt fails the
client raises `EndpointError` naming the endpoint, the last failure and the fix. An answer that is not a chat
completion (not JSON, no choices) reads as an empty reply, which the caller's parser counts as unparsable.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from .errors import SftpipeError


class EndpointError(SftpipeError):
    """The endpoint cannot be reached or answers with an HTTP error, after every retry."""


def api_key(env_name: str | None) -> str | None:
    """The API key held by the environment variable `env_name` (None when unnamed, unset or empty).

    >>> api_key(None), api_key("SFTPIPE_SURELY_UNSET_VARIABLE")
    (None, None)
    """
    return (os.environ.get(env_name) or None) if env_name else None


@dataclass
class ChatClient:
    """POSTs one user message to `{url}/chat/completions` (temperature 0) and returns the reply text."""

    url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    retries: int = 2
    max_tokens: int = 16
    backoff_s: float = 0.5  # wait before retry k: backoff_s * 2 ** (k - 1), at most 8 s
    name: str = "endpoint"  # what the endpoint is, for the error
    fix: str = "start the server or check the endpoint's url and model (any OpenAI-compatible API)"

    def complete(self, prompt: str) -> str:
        """The reply to `prompt` ("" when the answer is not a chat completion); `EndpointError` when it fails."""
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": 0, "max_tokens": self.max_tokens}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        endpoint = self.url.rstrip("/") + "/chat/completions"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(8.0, self.backoff_s * 2 ** (attempt - 1)))
            request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:  # noqa: S310 (configured URL)
                    data = json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} {e.reason}"
                if e.code != 429 and e.code < 500:
                    break
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = str(getattr(e, "reason", e))
                continue
            except json.JSONDecodeError:
                return ""
            try:
                return data["choices"][0]["message"]["content"] or ""
            except (KeyError, IndexError, TypeError):
                return ""
        raise EndpointError(f"{self.name} {endpoint} failed after {self.retries + 1} attempt(s): {last}; fix: "
                            f"{self.fix}")
