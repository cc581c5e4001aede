"""The demo's one-page report (OUT/report.html) from a hand-made demo folder: no model, no training.

Two eval folders (base vs SFT, base vs DPO) with small metrics.json files and generations rows, two run.json files
with a few logged steps, and a summary dict like the one the demo writes. One test opens the page in Debian's
chromium (Playwright); SFTPIPE_DEMO_OUT=<demo folder> makes it render a real demo folder instead, and
SFTPIPE_SCREENSHOT=1 saves what it shows to docs/demo-report.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from sftpipe.demo.report import chart, write_demo_report
from sftpipe.stats import wilson_interval
from sftpipe.runs import RunInfo, write_info

ROOT = Path(__file__).resolve().parents[2]
XSS = "<script>window.__xss = 1</script><img src=x onerror=\"window.__xss = 2\">"
CATS = ("refund", "shipping")
LABELS = {"baseline": "base", "final": "SFT"}


def _rate(k: int, n: int) -> dict:
    lo, hi = wilson_interval(k, n)
    return {"n": n, "k": k, "rate": k / n, "ci95": [lo, hi]}


def _model(per_cat: dict[str, tuple[int, int]], rules: dict[str, tuple[int, int]], loss: dict[str, float]) -> dict:
    """Two sets: heldout (loss and the checks' first half) and redteam (the checks' second half, no loss)."""
    def checks(half: int) -> dict:
        pick = lambda kn: (kn[0] // 2 + (kn[0] % 2) * half, kn[1] // 2)
        return {"schema_validity": _rate(1, 2), "policy": {
            "violation_rate": _rate(1, 4), "per_rule": {r: _rate(*pick(kn)) for r, kn in rules.items()},
            "per_category": {c: _rate(*pick(kn)) for c, kn in per_cat.items()}},
            "correctness": {"all_fields": _rate(1, 2), "per_field": {}}}
    per_category = {c: {"loss": v, "perplexity": 1.0, "tokens": 100, "examples": 3} for c, v in loss.items()}
    return {"sets": {"heldout": {"checks": checks(0), "loss": {"overall": {"loss": 1.0}, "per_category": per_category,
                                                               "per_decile": {}}},
                     "redteam": {"checks": checks(1)}}}


def _rows(label: str, xss_id: str | None = None) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for s in ("heldout", "redteam"):
        for i in range(6):
            cat, rid = CATS[i % 2], f"{s[0].upper()}{i}"
            prompt = [{"role": "system", "content": "sys"}, {"role": "user", "content": f"first question {rid}"},
                      {"role": "assistant", "content": "ok"}, {"role": "user", "content": f"last question {rid}"}]
            refund = cat == "refund"
            rows.setdefault(s, []).append({
                "id": rid, "category": cat, "prompt": prompt, "reference": f"reference {rid}",
                "output": XSS if rid == xss_id else f"{label} reply to {rid}", "new_tokens": 7, "finish": "stop",
                "schema_valid": (label != "base") if refund else None, "schema_error": None if label != "base"
                else "not JSON", "applicable": ["boilerplate"], "violations": ["boilerplate"] if label == "base"
                else [], "correct": None})
    if label == "SFT":
        rows["heldout"].append({**rows["heldout"][0], "id": "only-sft"})
    return rows


def _eval(run: Path, models: dict[str, tuple[dict, dict]]) -> None:
    for role, (_, rows) in models.items():
        gen = run / "eval" / "generations" / role
        gen.mkdir(parents=True)
        for s, rs in rows.items():
            (gen / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
        (gen / "ifeval.jsonl").write_text(json.dumps({"key": 1, "prompt": "IFEVAL-PROMPT", "output": "x"}) + "\n")
    (run / "eval" / "metrics.json").write_text(json.dumps({"models": {r: m for r, (m, _) in models.items()}}))
    (run / "eval" / "report.html").write_text("<html></html>")


def _run_json(run: Path, kind: str, log: list[dict]) -> None:
    write_info(run, RunInfo(kind=kind, config={"name": run.name}, base_model="tiny", mode="full", status="complete",
                            metrics=log))


SUMMARY = {
    "base": {"refund JSON schema-valid": 0.125, "policy violation rate": 0.8125, "held-out loss": 2.345678},
    "sft": {"refund JSON schema-valid": 0.917, "policy violation rate": 0.0625, "held-out loss": 1.234567},
    "met": {"refund JSON schema-valid": True, "policy violation rate": True, "held-out loss": True},
    "targets": {"refund JSON schema-valid": ">= 0.90", "policy violation rate": "<= base / 5",
                "held-out loss": "< base"},
    "dpo": {"run_dir": "runs/harbor-dpo", "pairs": 16, "final_loss": 0.5, "reward_margin": 0.25,
            "table": {"base": {"mean reply tokens": 88.5}, "sft": {"mean reply tokens": 61.0},
                      "dpo": {"mean reply tokens": 41.25, "refund JSON schema-valid": 0.933}},
            "met": {"mean reply tokens": True}, "targets": {"mean reply tokens": "< SFT"}},
    "seconds": {"generate": 1.5, "train": 77.25},
}


def make_demo(out: Path, dpo: bool = True) -> Path:
    sft, dpo_run = out / "runs" / "harbor", out / "runs" / "harbor-dpo"
    sft.mkdir(parents=True)
    _run_json(sft, "sft", [{"loss": 2.5, "step": 1}, {"loss": 1.75, "step": 2}, {"eval_loss": 1.9, "step": 2},
                           {"loss": 1.25, "step": 3}, {"train_loss": 1.8, "step": 3}])
    rules = {"boilerplate": (6, 12), "empty": (2, 12)}
    _eval(sft, {"baseline": (_model({"refund": (4, 8), "shipping": (6, 8)}, rules, {"refund": 2.5, "shipping": 2.25}),
                             _rows("base")),
                "final": (_model({"refund": (3, 12), "shipping": (0, 8)}, {"boilerplate": (3, 12), "empty": (0, 12)},
                                 {"refund": 1.5, "shipping": 1.125}), _rows("SFT", xss_id="H4"))})
    if dpo:
        dpo_run.mkdir(parents=True)
        _run_json(dpo_run, "dpo", [{"loss": 0.69, "rewards/margins": 0.0, "step": 1},
                                   {"loss": 0.5, "rewards/margins": 0.25, "step": 2}])
        _eval(dpo_run, {"final": (_model({"refund": (1, 12), "shipping": (0, 8)},
                                         {"boilerplate": (0, 12), "empty": (1, 12)},
                                         {"refund": 1.375, "shipping": 1.0625}), _rows("DPO"))})
    return out


@pytest.fixture
def demo(tmp_path) -> Path:
    return make_demo(tmp_path / "out")


def test_sections_in_order_with_the_numbers(demo):
    path = write_demo_report(demo, SUMMARY)
    assert path == demo / "report.html"
    html = path.read_text()
    heads = [html.index(f'<h2 id="{h}">') for h in ("headline", "curves", "categories", "rules", "samples")]
    assert heads == sorted(heads)
    headline = html[heads[0]:heads[1]]
    for text in ("0.917", "0.933", "41.250", "61.000", "88.500", "2.346", "1.235", "&gt;= 0.90", "&lt; SFT",
                 "77.2", "78.8"):  # SFT, DPO, base numbers, targets, stage seconds and their total
        assert text in headline, text
    cats, rules = html[heads[2]:heads[3]], html[heads[3]:heads[4]]
    lo, hi = wilson_interval(3, 12)  # SFT refund: 1/6 on heldout + 2/6 on redteam
    assert "25.0% (3/12)" in cats and f"[{100 * lo:.1f}%, {100 * hi:.1f}%]" in cats
    assert "100.0% (6/6)" in cats and "0.0% (0/6)" in cats  # schema validity from the rows, ifeval left out
    assert "1.125" in cats and "1.062" in cats and "2.250" in cats  # held-out loss per category, each model
    row = re.search(r"<tr><td>boilerplate</td>(.*?)</tr>", rules, re.S).group(1)
    assert re.findall(r'<td class="n">([^<]*)</td>', row) == [
        "50.0% (6/12)", "25.0% (3/12)", "0.0% (0/12)", "-25.0 pp", "-25.0 pp"]
    assert "IFEVAL-PROMPT" not in html


def test_loss_curves_are_svg_line_charts(demo):
    html = write_demo_report(demo, SUMMARY).read_text()
    svgs = re.findall(r"<svg.*?</svg>", html, re.S)
    assert len(svgs) == 3 and "SFT loss" in svgs[0] and "DPO loss" in svgs[1] and "reward margin" in svgs[2]
    assert "train loss" in svgs[0] and "eval loss" in svgs[0] and ">step<" in svgs[0]
    lines = re.findall(r'<polyline[^>]*points="([^"]*)"', svgs[0])
    assert len(lines) == 2 and len(lines[0].split()) == 3 and len(lines[1].split()) == 1  # train_loss is no point


def test_chart_geometry_stays_in_the_plot_area():
    c = chart("t", "loss", {"a": [(1, 10.81), (2, 10.77), (40, 10.79)], "b": [(5, float("nan")), (6, None)]})
    assert [line["name"] for line in c["lines"]] == ["a"]
    for x, y in c["lines"][0]["dots"]:
        assert c["left"] <= x <= c["right"] and c["top"] <= y <= c["bottom"]
    labels = [float(t) for _, t in c["yticks"]]
    assert labels[0] <= 10.77 and labels[-1] >= 10.81 and len(set(labels)) == len(labels)
    assert chart("t", "loss", {"a": []}) is None


def test_model_output_is_escaped(demo):
    html = write_demo_report(demo, SUMMARY).read_text()
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in html


def test_samples_are_the_same_prompts_for_every_model(demo):
    html = write_demo_report(demo, SUMMARY).read_text()
    blocks = html.split('<h2 id="samples">')[1].split("<h3>")[1:]
    assert len(blocks) == 4 and [b.split()[0] for b in blocks] == ["refund", "refund", "shipping", "shipping"]
    for block in blocks:
        rid = re.search(r"(heldout|redteam) / (\w+)</span>", block).group(2)
        assert f"last question {rid}" in block and f"first question {rid}" not in block
        for label in ("base", "SFT", "DPO"):
            assert f"{label} reply to {rid}" in block or (label == "SFT" and rid == "H4")
        assert "violations: boilerplate" in block and block.count("no violations") == 2
    assert "only-sft" not in html
    assert write_demo_report(demo, SUMMARY).read_text() == html  # deterministic


def test_a_demo_without_its_dpo_part_still_renders(tmp_path):
    out = make_demo(tmp_path / "out", dpo=False)
    summary = {k: v for k, v in SUMMARY.items() if k != "dpo"}
    html = write_demo_report(out, summary).read_text()
    assert "no DPO run" in html and "0.917" in html and "DPO reply" not in html
    assert len(re.findall(r"<svg", html)) == 1 and "<th>DPO − SFT</th>" not in html
    assert "<th>base</th><th>SFT</th></tr>" in html  # the sample tables have two columns
    summary_dpo_gone = {**SUMMARY}  # the summary names a DPO run whose folder is missing
    assert "no DPO run" in write_demo_report(out, summary_dpo_gone).read_text()


def test_report_in_a_real_browser(tmp_path):
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; scripts/test.sh installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install .[test])")
    real = os.environ.get("SFTPIPE_DEMO_OUT")
    out = Path(real) if real else make_demo(tmp_path / "out")
    summary = json.loads((out / "summary.json").read_text()) if real else SUMMARY
    path = write_demo_report(out, summary)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors, fetched = [], []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: fetched.append(r.url))
            page.goto(path.as_uri())
            tables, charts = page.locator("table"), page.locator("svg.chart")
            assert tables.count() >= 4 and charts.count() >= 1
            for loc in [*tables.all(), *charts.all(), *page.locator("svg.chart polyline").all()]:
                box = loc.bounding_box()
                assert box and box["width"] > 0 and box["height"] > 0
            assert page.evaluate("typeof window.__xss") == "undefined"
            if not real:  # shown as text
                assert "<script>window.__xss = 1</script>" in "".join(page.locator("table.replies").all_inner_texts())
            assert not errors and all(u.startswith("file://") for u in fetched), (errors, fetched)
            if os.environ.get("SFTPIPE_SCREENSHOT") == "1":
                height = page.evaluate("document.documentElement.scrollHeight")
                page.screenshot(path=str(ROOT / "docs" / "demo-report.png"), full_page=True,
                                clip={"x": 0, "y": 0, "width": 1280, "height": min(height, 2600)})
        finally:
            browser.close()
