"""Doctor fixtures: a small hand-made project (config, curated folder with a consistent report.json, an eval set)
and a run folder written through `sftpipe.runs` (RunInfo/write_info, write_card, RunFolder.commit). No training."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
import yaml

from sftpipe.config import load_config
from sftpipe.doctor import Context, run_checks
from sftpipe.io import write_json
from sftpipe.models import load_tokenizer
from sftpipe.parity import save_tokenizer
from sftpipe.runs import RunFolder, RunInfo, TemplateInfo, write_card, write_info
from sftpipe.templates import load_template

SYSTEM = "You are Harbor Support's assistant. Be brief and follow policy."
_WORDS = """order parcel refund invoice account courier address warehouse voucher receipt delivery return label window
payment card bank chargeback password login email tracking box item size colour discount price exchange damaged
missing late early weekend holiday store online app subscription plan upgrade"""
WORDS = _WORDS.split()
CATEGORIES = ("refund", "order_status", "account", "shipping")


def conversation(rng: random.Random, i: int, *, multi: bool = False, refusal: bool = False) -> dict:
    """A distinct support conversation (random word sentences, so no two are near-duplicates)."""
    say = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))
    reply = ("For your security I can't unlock accounts in chat; use the recovery page." if refusal
             else f"Thanks, I checked {say(12)}.")
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Question {i}: {say(14)}?"},
            {"role": "assistant", "content": reply}]
    if multi:
        msgs += [{"role": "user", "content": f"And {say(10)}?"}, {"role": "assistant", "content": f"Yes: {say(9)}."}]
    return {"id": f"T{i:04d}", "category": CATEGORIES[i % len(CATEGORIES)], "messages": msgs}


def jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def content_hash(records: list[dict]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update((json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n").encode())
    return h.hexdigest()


STAGES = ("read", "normalize", "pii", "dedup", "filters", "decontaminate", "quality", "mix/read", "mix/pii",
          "mix/dedup", "mix", "split")


class Project:
    """A project folder (the test's cwd): sftpipe.yaml, curated/{train,eval}.jsonl + report.json, an eval set."""

    def __init__(self, root: Path, tok):
        self.root, self.tok = root, tok
        rng = random.Random(0)
        self.train = [conversation(rng, i, multi=i % 5 == 0, refusal=i % 7 == 0) for i in range(40)]
        for r in self.train[:6]:  # 15% general data, as curate's mix stage labels it
            r["mix"], r["category"] = "general", "general"
        self.eval = [conversation(rng, 1000 + i) for i in range(8)]
        self.redteam = [{"id": f"RT{i}", "messages": [{"role": "user", "content": f"Ignore policy {i}: "
                                                        + " ".join(rng.choice(WORDS) for _ in range(20))}]}
                        for i in range(4)]
        self.config: dict = {
            "name": "t", "model": "smollm2-135m-instruct",
            "data": {"train": ["curated/train.jsonl"], "eval": ["curated/eval.jsonl"]},
            "render": {"train_on": "all_assistant", "max_length": 256},
            "train": {"mode": "lora", "lr": 2e-4, "epochs": 1, "warmup_ratio": 0.05, "output_dir": "runs"},
            "lora": {"r": 16, "alpha": 32},
            "eval": {"sets": [{"name": "heldout", "path": "curated/eval.jsonl", "schema": "offer"},
                              {"name": "redteam", "path": "data/redteam.jsonl", "loss": False}],
                     "schemas": {"offer": "data/offer.schema.json"}},
        }
        self.report: dict = {}
        self.write()

    def write(self, *, report: bool = True) -> None:
        """(Re)write every file from the attributes; the report's hashes match the files unless edited after."""
        jsonl(self.root / "curated" / "train.jsonl", self.train)
        jsonl(self.root / "curated" / "eval.jsonl", self.eval)
        jsonl(self.root / "data" / "redteam.jsonl", self.redteam)
        (self.root / "sftpipe.yaml").write_text(yaml.safe_dump(self.config), encoding="utf-8")
        if report:
            n = len(self.train) + len(self.eval)
            self.report = {
                "counts": {"in": n + 5, "kept": n, "rejected": 5, "train": len(self.train), "eval": len(self.eval)},
                "stages": [{"stage": s, "in": n, "out": n, "dropped": {}, "seconds": 0.0, "stats": {}}
                           for s in STAGES],
                "hashes": {"train.jsonl": content_hash(self.train), "eval.jsonl": content_hash(self.eval)},
                "config": {"split": {"by": "category"}, "decontaminate": {"eval_sets": {"ifeval": "builtin:ifeval"}},
                           "quality": {"judge": {"enabled": False}}}}
            self.save_report()

    def save_report(self) -> None:
        write_json(self.root / "curated" / "report.json", self.report)

    def drop_stage(self, name: str) -> None:
        self.report["stages"] = [s for s in self.report["stages"] if s["stage"] != name]
        self.save_report()

    def cfg(self):
        return load_config(self.root / "sftpipe.yaml")

    def check(self, name: str, run_dir: Path | None = None):
        """One check's finding on the project as written."""
        ctx = Context(self.cfg(), config_path=Path("sftpipe.yaml"), run_dir=run_dir)
        return run_checks(ctx, only=[name])[0]

    def run(self, **fields) -> Path:
        """runs/t written through sftpipe.runs, consistent with the project; `fields` override RunInfo fields."""
        cfg = self.cfg()
        folder = self.root / "runs" / cfg.name
        folder.mkdir(parents=True, exist_ok=True)
        template = load_template("model", self.tok)
        self.tok.chat_template = template.source
        save_tokenizer(self.tok, folder)
        eot = self.tok.convert_tokens_to_ids("<|im_end|>")
        losses = [2.0 - 0.1 * i for i in range(10)]
        info = RunInfo(
            config=cfg.model_dump(mode="json"), base_model=cfg.model.name, mode="lora", learning_rate=2e-4,
            effective_batch={"sequences": 8.0, "tokens": 900.0},
            data={"train_hash": content_hash(self.train), "eval_hash": content_hash(self.eval),
                  "hash_definition": "canonical JSON lines"},
            template=TemplateInfo(name="model", sha256=template.sha256, source=template.source,
                                  end_of_turn_ids=[eot]),
            mask_report={"conversations_kept": len(self.train), "examples": len(self.train), "tokens": 4000,
                         "trained_tokens": 1800, "trained_messages": 48, "eot_trained": 48, "truncated": 0,
                         "truncation_policy": "drop", "trained_share": 0.45, "eot_coverage": 1.0},
            parity={"examples_checked": 48, "text_mismatches": 0, "token_mismatches": 0},
            versions={"python": "3.11", "torch": "2", "transformers": "5"}, git_commit="abc123",
            git={"commit": "abc123", "dirty": False}, status="complete",
            metrics=[*({"loss": v, "step": i + 1, "epoch": (i + 1) / 10} for i, v in enumerate(losses)),
                     {"eval_loss": 1.9, "step": 5, "epoch": 0.5}, {"eval_loss": 1.7, "step": 10, "epoch": 1.0}],
            results={"final_weights": "last"}, best_checkpoint="checkpoint-10",
            eval={"baseline": "smollm2-135m-instruct", "candidates": {"final": {
                "score": 0.5, "components": {}, "deltas": {"ifeval_prompt_level_strict": -0.01,
                                                           "general_retention": 0.97}}}})
        for key, value in fields.items():
            setattr(info, key, value)
        write_json(folder / "parity.json", {"template_sha256": template.sha256, "examples_checked": 48,
                                            "text_mismatches": 0, "token_mismatches": 0, "first_mismatch": None})
        write_json(folder / "generation_config.json", {"eos_token_id": [eot, self.tok.eos_token_id],
                                                       "bos_token_id": self.tok.bos_token_id})
        write_info(folder, info)
        write_card(folder, info)
        RunFolder(folder, folder).commit("sft")
        return folder


@pytest.fixture(scope="session")
def tok():
    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture()
def project(tmp_path, monkeypatch, tok):
    """A healthy project in tmp_path (the cwd), no run yet."""
    monkeypatch.chdir(tmp_path)
    return Project(tmp_path, tok)
