"""README.md's fenced blocks, all accounted for. COVERAGE maps each block to the test that runs it (here or
elsewhere) or to why it cannot run offline; every `sftpipe` command line of a bash block is parsed against the
real CLI (its verb and every option exist, its required arguments are there); every yaml block validates against
the config models; and the blocks that run offline on a tiny model run here as written: render/inspect, serve
with the openai client and curl blocks against it, export (hf, vllm) and the review workflow."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest
import typer.main
from openai.types import CompletionUsage
from safetensors import safe_open
from typer.core import TyperGroup

from sftpipe import cli
from sftpipe.config import load_config
from sftpipe.errors import ConfigError

from .readme_blocks import README, ROOT, Block, blocks, commands, strip_comment
from .review.conftest import CATEGORIES, make_run
from .serve import conftest as serve_setup

try:  # typer >= 0.2x ships its own copy of click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError

free_port = serve_setup.free_port
tiny_run = serve_setup.tiny_run  # tests/serve's session fixture (a tiny trained run), registered for this file too

# Each README block, keyed by (fence language, the start of its first line), and how it is covered: "run here:
# <test in this file>", "run by <tests/file.py::test>", "not offline: <why>" or "output: <what it shows>".
SERVE = ("run here: test_serve_and_client_blocks_as_written (its second serve line; the first differs by its "
         "defaults only, checked by test_the_addresses_in_comments_are_the_defaults)")
COVERAGE: dict[tuple[str, str], str] = {
    ("bash", "bash scripts/demo.sh"): "not offline: the whole demo on SmolLM2-135M (about 20 min); its tiny size "
                                      "runs in tests/demo/test_demo.py::test_tiny_demo_runs_end_to_end_through_the_cli",
    ("bash", "bash scripts/test.sh"): "not offline: setup, lint and the whole suite (about 30 min, this file included)",
    ("bash", "sftpipe train -i my.jsonl"): "run by tests/train/test_hub.py::test_the_readme_quickstart_as_written",
    ("yaml", "name: mine"): "run here: test_every_yaml_block_validates",
    ("bash", ".venv/bin/sftpipe render"): "run here: test_render_and_inspect_as_written",
    ("yaml", "name: harbor"): "run here: test_every_yaml_block_validates",
    ("bash", "torchrun --nproc_per_node 8"): "not offline: 8 GPUs (NCCL) and an accelerate config; torchrun on the "
                                             "same CLI runs in tests/train/test_multinode.py::"
                                             "test_the_readme_recipe_on_a_shared_folder",
    ("bash", "export NNODES="): "run by tests/train/test_multinode.py::test_the_readme_recipe_on_a_shared_folder",
    ("yaml", "dpo:"): "run here: test_every_yaml_block_validates",
    ("", "doctor:"): "output: doctor's table on the demo's run",
    ("bash", "sftpipe review init"): "run here: test_review_block_as_written",
    ("bash", ".venv/bin/sftpipe serve runs/harbor"): SERVE,
    ("python", "from openai import OpenAI"): SERVE,
    ("bash", "curl -s http://127.0.0.1:8000/v1/chat/completions"): SERVE,
    ("bash", "vllm serve dist/harbor-vllm"): "not offline: vLLM needs a GPU and llama-server a llama.cpp build; "
                                             "the front with an engine behind it runs in tests/serve/"
                                             "test_engine_seam.py::test_the_front_answers_as_the_engine_does",
    ("bash", ".venv/bin/sftpipe export runs/harbor"): "run here: test_export_block_as_written (hf, vllm); the gguf "
                                                      "line is run by tests/serve/test_export.py::"
                                                      "test_gguf_by_llama_cpps_converter_keeps_template_stops_tokens_and_logits",
}
PLACEHOLDER = "1"  # an unset $VAR in a parsed line: valid as a string, a number and a path
SFTPIPE_WORD = re.compile(r"(^|[\s/])sftpipe(\.cli)?(\s|$)")


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    """Every test here runs torch on one thread (tests/conftest.py says why)."""


def block(lang: str, start: str) -> Block:
    """The README block that COVERAGE keys by (lang, start)."""
    found = [b for b in blocks() if b.lang == lang and b.first.startswith(start)]
    assert len(found) == 1, f"{len(found)} README blocks ```{lang} start with {start!r}"
    return found[0]


def cli_argv(command: str, env: dict[str, str] | None = None) -> list[str] | None:
    """The sftpipe arguments of a shell line ($VARs from env, else PLACEHOLDER), or None if it runs no sftpipe."""
    env = env or {}
    tokens = shlex.split(re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m[1], PLACEHOLDER), strip_comment(command)))
    while tokens and re.fullmatch(r"\w+=.*", tokens[0]):  # VAR=value prefixes
        tokens = tokens[1:]
    if tokens and (tokens[0] == "sftpipe" or tokens[0].endswith("/sftpipe")):
        return tokens[1:]
    starts = [i + 2 for i in range(len(tokens) - 1) if tokens[i:i + 2] == ["-m", "sftpipe.cli"]]
    return tokens[starts[0]:] if starts else None


def parse_cli(argv: list[str]):
    """The real CLI's parse of argv, down to its verb, without running it (UsageError if the CLI refuses it)."""
    cmd, name, parent = typer.main.get_command(cli.app), "sftpipe", None
    while True:
        ctx = cmd.make_context(name, list(argv), parent=parent)
        rest = [*ctx._protected_args, *ctx.args]  # a group leaves its subcommand and what follows unparsed
        if not isinstance(cmd, TyperGroup) or not rest:
            return ctx
        name, cmd, argv = cmd.resolve_command(ctx, rest)
        parent = ctx


def sftpipe(argv: list[str], capsys) -> tuple[int, str]:
    """The console script (sftpipe.cli:main) on argv, in this process: (exit code, its stdout and stderr)."""
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["sftpipe", *argv])
        try:
            cli.main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    out = capsys.readouterr()
    return code, out.out + out.err


def yaml_problems(text: str, tmp_path: Path) -> list[str]:
    """What load_config says about a YAML block written to a file (every problem at once), or []."""
    path = tmp_path / "block.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as err:
        return [str(err)]
    return []


def start_server(argv: list[str], cwd: Path, port: int, env: dict[str, str], ready: str) -> subprocess.Popen:
    """`python -m sftpipe.cli *argv` in cwd, returned once GET `ready` on `port` answers (any status)."""
    proc = subprocess.Popen([sys.executable, "-m", "sftpipe.cli", *argv], cwd=cwd, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv} exited: {proc.stdout.read()[-3000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}{ready}", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"{argv} did not answer in 120 s")


def stop(proc: subprocess.Popen) -> str:
    """Terminate a server started by start_server; its output."""
    proc.terminate()
    try:
        return proc.communicate(timeout=20)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0]


def with_port(argv: list[str], port: int) -> list[str]:
    """argv with --port set to `port` (the README's ports may be taken on a test machine)."""
    if "--port" in argv:
        i = argv.index("--port") + 1
        return [*argv[:i], str(port), *argv[i + 1:]]
    return [*argv, "--port", str(port)]


def curl(command: str, env: dict[str, str], by_curl: bool = True) -> str:
    """A README curl line run by bash; by httpx with the same URL, headers and body where curl is missing."""
    if by_curl and shutil.which("curl"):
        res = subprocess.run(["bash", "-c", command], env={**os.environ, **env}, capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, (command, res.stderr)
        return res.stdout
    tokens = shlex.split(re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m[1], ""), command))
    url = next(t for t in tokens if t.startswith("http"))
    headers = dict(tokens[i + 1].split(": ", 1) for i, t in enumerate(tokens) if t == "-H")
    data = next((tokens[i + 1] for i, t in enumerate(tokens) if t == "-d"), None)
    return httpx.request("POST" if data else "GET", url, headers=headers, content=data, timeout=120).text


@pytest.fixture(scope="module")
def project(tiny_run, tmp_path_factory) -> Path:
    """A working folder as the README assumes: runs/harbor is a copy of the tiny trained run."""
    root = tmp_path_factory.mktemp("readme-project")
    shutil.copytree(tiny_run, root / "runs" / "harbor")
    return root


# 1. Every block is accounted for.

def test_every_readme_block_is_in_the_coverage_table():
    problems = []
    found = blocks()
    for b in found:
        keys = [k for k in COVERAGE if k[0] == b.lang and b.first.startswith(k[1])]
        if not keys:
            problems.append(f"README.md:{b.line}: the ```{b.lang} block {b.first[:60]!r} matches 0 COVERAGE "
                            "entries; fix: add it to COVERAGE in tests/test_readme.py with the test that runs it "
                            "(or why it cannot run offline)")
        elif len(keys) > 1:
            problems.append(f"README.md:{b.line}: the ```{b.lang} block {b.first[:60]!r} matches {keys}; fix: "
                            "make the COVERAGE keys longer")
    for (lang, start), how in COVERAGE.items():
        if not any(b.lang == lang and b.first.startswith(start) for b in found):
            problems.append(f"COVERAGE entry ({lang!r}, {start!r}) matches no README block; fix: remove it or "
                            "update its key")
        if not re.match(r"(run here: |run by |not offline: |output: )\S", how):
            problems.append(f"COVERAGE entry ({lang!r}, {start!r}): {how!r} says neither how nor why")
        for name in re.findall(r"^run here: (\w+)", how):
            if not callable(globals().get(name)):
                problems.append(f"COVERAGE entry ({lang!r}, {start!r}) names {name}, which this file lacks")
        for path, name in re.findall(r"(tests/[\w/]+\.py)::(\w+)", how):
            if not (ROOT / path).is_file() or f"def {name}(" not in (ROOT / path).read_text(encoding="utf-8"):
                problems.append(f"COVERAGE entry ({lang!r}, {start!r}) names {path}::{name}, which does not exist")
    assert not problems, "\n".join(problems)


def test_the_coverage_check_finds_a_new_block_and_a_stale_entry(monkeypatch):
    """The table check above fails for a block it does not know and for an entry whose block is gone."""
    readme = README.read_text(encoding="utf-8")
    text = readme.replace("```bash\nbash scripts/test.sh\n```", "") + "\n```bash\nsftpipe doctor --json\n```\n"
    assert "scripts/test.sh" not in text
    monkeypatch.setitem(globals(), "blocks", lambda read=blocks: read(text))
    with pytest.raises(AssertionError) as err:
        test_every_readme_block_is_in_the_coverage_table()
    assert "'sftpipe doctor --json' matches 0 COVERAGE entries; fix: add it" in str(err.value)
    assert "('bash', 'bash scripts/test.sh') matches no README block; fix: remove it" in str(err.value)


# 2. Every sftpipe command line parses against the real CLI.

def test_every_sftpipe_line_parses_against_the_cli():
    lines = [c for b in blocks() if b.lang == "bash" for c in commands(b.body)]
    named = [c for c in lines if SFTPIPE_WORD.search(c)]
    assert named, "no sftpipe line found in README.md's bash blocks"
    assert [c for c in named if cli_argv(c) is None] == []  # every line that names sftpipe is read as one
    problems = []
    for line in named:
        try:
            parse_cli(cli_argv(line))
        except UsageError as err:
            problems.append(f"{line}\n    -> {err.format_message()}")
    assert not problems, "README.md lines the CLI refuses (fix the README or the CLI):\n" + "\n".join(problems)


def test_the_line_reader_joins_strips_and_substitutes():
    body = ('FOO=1 torchrun --nproc_per_node $N \\\n  -m sftpipe.cli train -c "my cfg.yaml"   # one node\n'
            'sftpipe serve runs/x --api-key "${KEY}" --port 8001  # loopback\ncurl -s http://x -d \'{"a": "#1"}\'\n')
    lines = commands(body)
    assert lines[2] == "curl -s http://x -d '{\"a\": \"#1\"}'"
    assert [cli_argv(c, {"KEY": "k"}) for c in lines] == [
        ["train", "-c", "my cfg.yaml"], ["serve", "runs/x", "--api-key", "k", "--port", "8001"], None]
    ctx = parse_cli(cli_argv(lines[1], {"KEY": "k"}))
    assert ctx.command_path == "sftpipe serve" and ctx.params["port"] == 8001 and ctx.params["api_key"] == "k"
    assert ctx.params["run_dir"] == Path("runs/x")  # parsed only: the callback would fail on a missing run
    ctx = parse_cli(cli_argv("sftpipe review add-reviewer s.sqlite maria  # prints maria's link"))
    assert ctx.command_path == "sftpipe review add-reviewer" and ctx.params["name"] == "maria"


@pytest.mark.parametrize("line, error", [
    ("sftpipe export runs/harbor --format hf --out d --dtype bf16 --no-such-option", "No such option"),
    (".venv/bin/sftpipe serve runs/harbor --prot 8001", "No such option"),
    ("sftpipe evaluate runs/harbor", "No such command"),
    ("sftpipe review publish s.sqlite", "No such command"),
    ("sftpipe review init --vs base", "Missing (option|parameter).*run_a"),
    ("sftpipe export --format hf --out d", "Missing (argument|parameter).*run_dir"),
    ("sftpipe render --max-length many", "valid integer"),
    ("sftpipe inspect --input a.jsonl extra", "unexpected extra argument"),
    ("torchrun --nproc_per_node 8 -m sftpipe.cli train -c x.yaml --epochs 2", "No such option"),
])
def test_a_wrong_line_fails_to_parse(line, error):
    with pytest.raises(UsageError, match=error):
        parse_cli(cli_argv(line))


# 3. The YAML blocks validate (a partial block such as dpo: over the defaults).

def test_every_yaml_block_validates(tmp_path):
    found = [b for b in blocks() if b.lang == "yaml"]
    assert found
    problems = [f"README.md:{b.line}: {p}" for b in found for p in yaml_problems(b.body, tmp_path)]
    assert not problems, "\n".join(problems)


def test_a_wrong_yaml_block_fails(tmp_path):
    assert "dpo.betaa: unknown key" in yaml_problems("dpo:\n  betaa: 0.1\n", tmp_path)[0]
    assert "render.train_on" in yaml_problems("render:\n  train_on: every_turn\n", tmp_path)[0]


# 4. The blocks that run offline, run.

def test_render_and_inspect_as_written(tmp_path, monkeypatch, capsys):
    """In a fresh folder holding the repo's examples/: render writes the rows, mask report and parity proof of
    every record; inspect prints the record it names with its trained tokens marked (⟦…⟧ when piped)."""
    from datasets import load_from_disk

    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    argvs = [cli_argv(c) for c in commands(block("bash", ".venv/bin/sftpipe render").body)]
    assert [a[0] for a in argvs] == ["render", "inspect"]
    outputs = {}
    for argv in argvs:
        code, outputs[argv[0]] = sftpipe(argv, capsys)
        assert code == 0, outputs[argv[0]][-3000:]
    render, inspect = (parse_cli(a).params for a in argvs)
    records = [json.loads(s) for s in Path(render["input"][0]).read_text(encoding="utf-8").splitlines() if s]
    out = render["output"]
    report = json.loads(out.with_name(out.name + ".mask_report.json").read_text())
    assert report["records_in"] == report["records_rendered"] == len(records)
    assert report["mask"]["max_length"] == render["max_length"] and report["mask"]["eot_coverage"] == 1.0
    parity = json.loads(out.with_name(out.name + ".parity.json").read_text())
    assert parity["examples_checked"] > 0 and parity["text_mismatches"] == parity["token_mismatches"] == 0
    rows = load_from_disk(str(out))
    assert len(rows) == len(records) and {"input_ids", "labels"} <= set(rows.column_names)
    shown = records[inspect["index"]]["messages"]
    replies = [m["content"] for m in shown if m["role"] == "assistant"]
    assert all(f"⟦{r}" in outputs["inspect"] for r in replies), outputs["inspect"]
    assert [m["content"] for m in shown if m["role"] == "user"][0] in outputs["inspect"]


def test_serve_and_client_blocks_as_written(project):
    """The second serve line (--api-key "$KEY", --set) in the README's folder on a free port, and both client
    blocks against it: the python block prints the server's greedy replies to the same requests, the curl block
    gets a chat completion and the render of the run's template; without the key, 401. Substituted: the port
    (8000 and 8001 -> a free one), the python block's api_key "KEY" -> $KEY (it is "any string" only for the first
    line's keyless server, which differs by defaults only: see test_the_addresses_in_comments_are_the_defaults),
    and the model "harbor" -> the tiny run's name (the server checks run.json's `name`; the README's run was
    trained as harbor, this one was not)."""
    key = "readme-key-42"
    argvs = [cli_argv(c, {"KEY": key}) for c in commands(block("bash", ".venv/bin/sftpipe serve").body)]
    assert [a[:2] for a in argvs] == [["serve", "runs/harbor"]] * 2 and parse_cli(argvs[1]).params["api_key"] == key
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(with_port(argvs[1], port), project, port, {"OMP_NUM_THREADS": "1"}, "/health")
    try:
        name = httpx.get(f"{url}/health", timeout=10).json()["model"]
        python = block("python", "from openai import OpenAI").body
        code = python.replace("http://127.0.0.1:8000", url).replace('model="harbor"', f"model={name!r}")
        code = code.replace('api_key="KEY"', f"api_key={key!r}")
        assert code.count(url) == 1 and code.count(f"model={name!r}") == 2 and code.count(key) == 1
        printed = io.StringIO()
        with redirect_stdout(printed):
            exec(compile(code, "README.md python block", "exec"), {})
        asked = [({"max_tokens": 200}, "Where is order 4411?"), ({}, "Refund please")]
        want = [httpx.post(f"{url}/v1/chat/completions", timeout=120, headers={"Authorization": f"Bearer {key}"},
                           json={"messages": [{"role": "user", "content": q}], **extra}).json()
                for extra, q in asked]
        usage = CompletionUsage.model_validate(want[0]["usage"])  # printed as the client parsed it
        assert printed.getvalue() == (f"{want[0]['choices'][0]['message']['content']} {usage}\n"
                                      f"{want[1]['choices'][0]['message']['content']}")

        lines = [c.replace("http://127.0.0.1:8000", url).replace('"model": "harbor"', f'"model": "{name}"')
                 for c in commands(block("bash", "curl -s http://127.0.0.1:8000").body)]
        chat, render = (json.loads(curl(c, {"KEY": key})) for c in lines)
        assert chat["object"] == "chat.completion" and chat["model"] == name
        assert chat["choices"][0]["message"]["role"] == "assistant"
        assert chat["choices"][0]["finish_reason"] in ("stop", "length")
        assert chat["usage"]["total_tokens"] == chat["usage"]["prompt_tokens"] + chat["usage"]["completion_tokens"]
        info = json.loads((project / "runs" / "harbor" / "run.json").read_text())
        assert render["template_sha256"] == info["template"]["sha256"]
        assert "Hi <|im_end|>" in render["prompt"] and len(render["token_ids"]) == len(render["tokens"]) > 0
        assert json.loads(curl(lines[1], {"KEY": key}, by_curl=False)) == render  # the fallback sends the same
        assert httpx.post(f"{url}/v1/render", timeout=10, json={"messages": []}).status_code == 401
    finally:
        log = stop(server)
    assert "Traceback" not in log, log


def test_the_addresses_in_comments_are_the_defaults():
    """A `# http://HOST:PORT` comment on a serve line is where that line listens: the CLI's defaults."""
    checked = 0
    for b in blocks():
        for line in b.body.splitlines() if b.lang == "bash" else []:
            said = re.search(r"#.*http://([\d.]+):(\d+)", line)
            if said and (argv := cli_argv(line)) is not None:
                params = parse_cli(argv).params
                if "--port" in argv or "--host" in argv:
                    continue
                host, port = params["host"], params["port"]
                if argv[0] == "serve":  # None: the config's serve section decides
                    defaults = load_config().serve
                    host, port = host or defaults.host, port or defaults.port
                assert (host, port) == (said[1], int(said[2])), line
                checked += 1
    assert checked >= 2


def test_export_block_as_written(project, monkeypatch, capsys):
    """The hf and vllm lines in the README's folder: each bundle holds merged weights in the dtype asked for, the
    run's template and an export record; the vllm bundle adds the chat template file and its launch command."""
    monkeypatch.chdir(project)
    info = json.loads((project / "runs" / "harbor" / "run.json").read_text())
    argvs = [cli_argv(c) for c in commands(block("bash", ".venv/bin/sftpipe export").body)]
    ran = []
    for argv in argvs:
        params = parse_cli(argv).params
        if params["format"] == "gguf":
            continue  # parsed above; run by tests/serve/test_export.py (see COVERAGE)
        code, out = sftpipe(argv, capsys)
        assert code == 0, out[-3000:]
        bundle = params["out"]
        record = json.loads((bundle / "export.json").read_text())
        assert record["template_sha256"] == info["template"]["sha256"] and record["dtype"] == params["dtype"]
        dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[params["dtype"]]
        with safe_open(str(bundle / "model.safetensors"), "pt") as f:
            assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {f"torch.{dtype}"}  # noqa: SIM118
        assert not (bundle / "adapter_config.json").exists()
        if params["format"] == "vllm":
            assert (bundle / "chat_template.jinja").is_file()
            assert "vllm serve" in (bundle / "README.md").read_text()
        ran.append(params["format"])
    assert ran == ["hf", "vllm"]


def test_review_block_as_written(tmp_path, monkeypatch, capsys):
    """The review block in a folder with runs/harbor (a committed run whose eval wrote its own and its base
    model's replies). `review serve` runs on a free port (not 8700): two reviewers log in with the links
    add-reviewer printed and vote on its page; stats and export --agree read their votes."""
    run = make_run(tmp_path / "runs", "harbor", [f"Tuned reply {i}." for i in range(len(CATEGORIES))])
    final = run / "eval" / "generations" / "final" / "support.jsonl"
    rows = [json.loads(s) for s in final.read_text().splitlines()]
    (run / "eval" / "generations" / "baseline").mkdir()
    (run / "eval" / "generations" / "baseline" / "support.jsonl").write_text(
        "".join(json.dumps({**r, "output": f"Base reply {i}."}) + "\n" for i, r in enumerate(rows)))
    monkeypatch.chdir(tmp_path)
    argvs = {tuple(a[:2]): a for a in (cli_argv(c) for c in commands(block("bash", "sftpipe review init").body))}
    assert list(argvs) == [("review", v) for v in ("init", "add-reviewer", "serve", "stats", "export")]
    code, out = sftpipe(argvs["review", "init"], capsys)
    assert code == 0 and parse_cli(argvs["review", "init"]).params["out"].is_file(), out
    add = argvs["review", "add-reviewer"]
    name, field = parse_cli(add).params["name"], load_config().review.rubric[0]
    links = []
    for who in (name, f"{name}-2"):  # export --agree needs two reviewers
        code, out = sftpipe([who if a == name else a for a in add], capsys)
        assert code == 0, out
        links.append(re.search(r"http://\S+", out).group(0))
    port = free_port()
    server = start_server(with_port(argvs["review", "serve"], port), tmp_path, port, {}, "/")
    votes = [("A", "A"), ("A", "A"), ("A", "B")]  # (first reviewer, second) per item: two agree, one does not
    try:
        for k, link in enumerate(links):
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as web:
                parts = urlsplit(link)
                assert web.get(f"{parts.path}?{parts.query}").status_code == 303  # the link sets the login cookie
                for pos, verdicts in enumerate(votes):
                    page = web.get(f"/item/{pos}")
                    assert page.status_code == 200 and "Question" in page.text
                    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
                    sent = web.post(f"/item/{pos}", data={"csrf": csrf, "verdict": verdicts[k],
                                                          f"A_{field}": "5", f"B_{field}": "2"})
                    assert sent.status_code == 303, sent.text
    finally:
        log = stop(server)
    assert "Traceback" not in log, log
    code, out = sftpipe(argvs["review", "stats"], capsys)
    assert code == 0 and "win rate" in out, out
    export = argvs["review", "export"]
    code, out = sftpipe(export, capsys)
    assert code == 0, out
    params = parse_cli(export).params
    pairs = [json.loads(s) for s in params["pairs"].read_text().splitlines()]
    assert params["agree"] and len(pairs) == sum(a == b for a, b in votes)
    for pair in pairs:  # both replies to the pair's own prompt, the run's and its base model's
        number = pair["prompt"][-1]["content"].split()[1]
        assert {pair["chosen"][-1]["content"], pair["rejected"][-1]["content"]} == \
            {f"Tuned reply {number}.", f"Base reply {number}."}
    rubric = [json.loads(s) for s in params["rubric"].read_text().splitlines()]
    assert len(rubric) == 2 * len(votes)  # each voted item: one row per run, with both reviewers' scores
    assert all(r["raters"] == len(links) and r[field] in (5.0, 2.0) for r in rubric)
