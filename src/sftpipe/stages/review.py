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
from ..review.build import BASELINE, CHECKPOINT, build_items, read_prompt_ids
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


def source(cfg: SftpipeConfig, ref: str, first: Path | None = None) -> tuple[Path, str]:
    """Whose replies a side shows: `RUN` (its final weights'), `RUN:base` (the base model's, as the run's eval
    generated them), or `base` (the --from run's base model)."""
    if ref == "base" and first is not None:
        return first, BASELINE
    if ref.endswith(":base"):
        return run_dir(cfg, ref.removesuffix(":base")), BASELINE
    return run_dir(cfg, ref), CHECKPOINT


def init(cfg: SftpipeConfig, run_a: str, run_b: str, out: Path | None = None, prompts: Path | None = None,
         n: int | None = None) -> InitResult:
    """Build a session from two runs' eval generations (or a run's and its base model's)."""
    rcfg = cfg.review
    first = source(cfg, run_a)
    sides = [first, source(cfg, run_b, first[0])]
    if sides[0][0].resolve() == sides[1][0].resolve() and sides[0][1] == sides[1][1]:
        raise ReviewError("review init", ["--from and --vs name the same replies; fix: compare two different runs, "
                                          "or a run with its base model (--vs base)"])
    dirs = [d for d, _ in sides]
    items, identical = build_items(sides, n=n or rcfg.n, seed=rcfg.seed, sets=rcfg.sets, repeats=rcfg.repeats,
                        prompt_ids=read_prompt_ids(prompts) if prompts else None)
    infos = [read_info(d) for d in dirs]
    names = [d.name + (":base" if label == BASELINE else "") for d, label in sides]
    out = out or Path("reviews") / f"{names[0]}-vs-{names[1]}.sqlite".replace(":", "-")
    runs = [{"idx": k, "name": names[k], "path": str(dirs[k]), "checkpoint": sides[k][1],
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
