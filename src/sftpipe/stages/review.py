"""`sftpipe review`: blind pairwise review of two runs' replies by people.

init    two evaluated runs -> a session file (.sqlite): prompts both answered, stratified by category, each
        with a seeded left/right order; source runs and checkpoints stored, never shown.
add-reviewer  a reviewer and their personal link (the token is stored only as its sha256).
serve   the page (loopback by default) until stopped; every answer is committed before the next item.
export  DPO pairs (TRL prompt/chosen/rejected, with provenance) and rubric scores for `eval.human`.
stats   win rate with CI, rubric means per run, agreement (Cohen's kappa / Krippendorff's alpha), consistency.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from ..config import SftpipeConfig
from ..io import require_free_port
from ..review import export as review_export
from ..review import stats as review_stats
from ..review import store
from ..review.store import ReviewError
from ..review.build import CHECKPOINT, build_items, read_prompt_ids
from ..runs import check_name, is_run, read_info


@dataclass
class InitResult:
    """The session written and what it holds."""

    session: Path
    runs: list[str]
    items: int
    repeats: int
    categories: dict[str, int]
    identical: int = 0  # shared prompts left out: both runs replied the same


def run_dir(cfg: SftpipeConfig, ref: str) -> Path:
    """A run given as a folder path (holding run.json) or as a plain name under train.output_dir."""
    path = Path(ref)
    if len(path.parts) > 1 or is_run(path):
        return path
    return Path(cfg.train.output_dir or "runs") / check_name(ref)


def init(cfg: SftpipeConfig, run_a: str, run_b: str, out: Path | None = None, prompts: Path | None = None,
         n: int | None = None) -> InitResult:
    """Build a session from the two runs' eval generations."""
    rcfg = cfg.review
    dirs = [run_dir(cfg, run_a), run_dir(cfg, run_b)]
    if dirs[0].resolve() == dirs[1].resolve():
        raise ReviewError("review init", ["--from and --vs name the same run; fix: compare two different runs"])
    items, identical = build_items(dirs, n=n or rcfg.n, seed=rcfg.seed, sets=rcfg.sets, repeats=rcfg.repeats,
                        prompt_ids=read_prompt_ids(prompts) if prompts else None)
    infos = [read_info(d) for d in dirs]
    names = [d.name for d in dirs]
    out = out or Path("reviews") / f"{names[0]}-vs-{names[1]}.sqlite"
    runs = [{"idx": k, "name": names[k], "path": str(dirs[k]), "checkpoint": CHECKPOINT,
             "base_model": infos[k].base_model} for k in (0, 1)]
    store.create(out, runs, items, {"session": out.stem, "rubric": rcfg.rubric, "seed": rcfg.seed,
                                    "scale": [1, 5]})
    cats: dict[str, int] = {}
    for it in items:
        if it["repeat_of"] is None:
            cats[it["category"]] = cats.get(it["category"], 0) + 1
    return InitResult(out, names, sum(it["repeat_of"] is None for it in items),
                      sum(it["repeat_of"] is not None for it in items), dict(sorted(cats.items())), identical)


def add_reviewer(session: Path, name: str, host: str = "127.0.0.1", port: int = 8700, new_link: bool = False
                 ) -> str:
    """Register a reviewer (with `new_link`: give an existing one a new link, the old one stops working); returns
    their link."""
    with closing(store.connect(session)) as con:
        token = store.new_token(con, name) if new_link else store.add_reviewer(con, name)
    return f"http://{host}:{port}/login?token={token}"


def serve(cfg: SftpipeConfig, session: Path, host: str = "127.0.0.1", port: int = 8700,
          banner: Callable[[str], None] | None = None) -> None:
    """Serve the review page until interrupted; `banner(line)` first says what is served and how to log in."""
    import uvicorn

    from ..review.app import create_app

    require_free_port(host, port, "--port")
    app = create_app(session, cfg.review)
    if banner is not None:
        with closing(store.connect(session)) as con:
            items, names = store.summary(con)
        banner(f"session {session}: {items} items, reviewers {', '.join(names) or 'none yet'} (links: sftpipe "
               f"review add-reviewer {session} NAME [--new-link]); open http://{host}:{port}/login?token=... ")
    # no access log, since a reviewer's first request carries their token
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, workers=1)


@dataclass
class ExportResult:
    pairs: tuple[Path, int] | None
    rubric: tuple[Path, int] | None


def export(session: Path, pairs: Path | None = None, rubric: Path | None = None, agree: bool = False
           ) -> ExportResult:
    """Write DPO pairs and/or rubric scores."""
    if pairs is None and rubric is None:
        raise ReviewError("review export", ["nothing to write; fix: pass --pairs FILE.jsonl and/or --rubric "
                                            "FILE.jsonl"])
    with closing(store.connect(session)) as con:
        p = (pairs, review_export.write_pairs(con, pairs, agree=agree)) if pairs else None
        r = (rubric, review_export.write_rubric(con, rubric)) if rubric else None
    return ExportResult(p, r)


def stats(session: Path) -> dict:
    """The session's statistics (see sftpipe.review.stats)."""
    with closing(store.connect(session)) as con:
        return review_stats.summarize(con)
