"""README.md's fenced blocks and the command lines in them, for the tests that run the README as written
(tests/test_readme.py; the quickstart in tests/train/test_hub.py; the multi-node recipe in test_multinode.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\S*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language (bash, python, yaml; "" for an untagged block), body and place."""

    lang: str
    body: str
    line: int  # the opening fence's line number (for messages only: tests key blocks by their text)
    mark: str  # the `<!-- ... -->` comment on the line right above the fence, without its delimiters, or ""

    @property
    def first(self) -> str:
        """The block's first non-blank line, stripped."""
        return next((s.strip() for s in self.body.splitlines() if s.strip()), "")


def blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of `text` (default: README.md) whose fences start a line, in order."""
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
        above = lines[i - 1].strip() if i else ""
        mark = above[4:-3].strip() if above.startswith("<!--") and above.endswith("-->") else ""
        found.append(Block(m.group(1), "".join(s + "\n" for s in lines[i + 1:end]), i + 1, mark))
        i = end + 1
    return found


def block_after(mark: str, text: str | None = None) -> str:
    """The body of the block right below the `<!-- mark...` comment (the README promises a test runs it)."""
    for b in blocks(text):
        if b.mark.startswith(mark):
            return b.body
    raise LookupError(f"README.md has no block right below a '<!-- {mark}' comment")


def strip_comment(line: str) -> str:
    """`line` without a trailing shell `# comment` (a # inside quotes or inside a word is kept)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands(body: str) -> list[str]:
    """A shell block's commands, one per entry: backslash continuations joined, comments and blank lines left out."""
    joined = body.replace("\\\n", " ").splitlines()
    return [c for c in (strip_comment(line) for line in joined) if c.strip()]
