"""Terminal summaries of stage results (rich tables). Presentation only."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console()


def _table(title: str, rows: list[tuple[str, object]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(key, str(value))
    return table


def print_render(result) -> None:
    """Summarise a render run: counts, trained share, end-of-turn coverage, packing and parity."""
    m, p = result.mask, result.parity
    packed, padded = result.packing["packed"], result.packing["padded"]
    console.print(_table("render", [
        ("records in / rendered / rejected", f"{result.records_in} / {m.conversations_kept} / {result.rejected}"),
        ("examples / tokens", f"{m.examples} / {m.tokens}"),
        ("trained share", f"{m.trained_share:.1%}"),
        ("end-of-turn coverage", f"{m.eot_coverage:.1%}"),
        ("truncated / history-rewrite splits", f"{m.truncated} / {m.history_rewrite_splits}"),
        ("packing efficiency (packed / padded)", f"{packed['efficiency']:.1%} / {padded['efficiency']:.1%}"),
        ("parity (checked, text / token mismatches)",
         f"{p['examples_checked']}, {p['text_mismatches']} / {p['token_mismatches']}"),
        ("rows", result.output), ("mask report", result.report_path), ("parity", result.parity_path),
        *([("rejects", result.rejects_path)] if result.rejects_path else []),
    ]))
