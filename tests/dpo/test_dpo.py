"""`sftpipe dpo` on a tiny model: loss starts at ln 2, the reward margin rises on a separable set, the reference
is the SFT policy (never the base), and the run folder is a complete run that loads and evaluates like SFT's."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from safetensors.torch import load_file

from sftpipe.dpo.encode import encode_pairs
from sftpipe.dpo.pairs import iter_pairs
from sftpipe.dpo.reference import completion_logps
from sftpipe.errors import ConfigError
from sftpipe.runs import load_base, load_run, read_info, require_complete
from sftpipe.stages.dpo import run

from .conftest import dpo_cfg


@pytest.fixture(scope="module")
def lora_dpo(tiny_dir, data_dir, sft_run, tmp_path_factory):
    """One 8-step DPO run from the LoRA SFT run; returns (result, reference cache folder)."""
    tmp = tmp_path_factory.mktemp("dpo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sftpipe.stages.dpo.cache_dir", lambda: tmp / "cache")
        result = run(dpo_cfg(tiny_dir, data_dir, sft_run, tmp / "runs", "dpo.max_steps=8"), progress=False)
    return result, tmp / "cache" / "dpo-ref"


def _logs(run_dir, key):
    return [m[key] for m in read_info(run_dir).metrics if key in m]


def test_step_0_loss_is_ln2_and_the_margin_rises_on_a_separable_set(lora_dpo):
    result, _ = lora_dpo
    losses, margins = _logs(result.run_dir, "loss"), _logs(result.run_dir, "rewards/margins")
    assert len(losses) == 8
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference before the first update
    assert margins[0] == pytest.approx(0.0, abs=1e-5)
    assert margins[-1] > margins[0] + 0.5 and losses[-1] < losses[0] - 0.2
    assert _logs(result.run_dir, "rewards/accuracies")[-1] == 1.0
    assert all(k in read_info(result.run_dir).metrics[0] for k in ("rewards/chosen", "rewards/rejected"))


def _rows(sft_run, data_dir):
    from sftpipe.runs import load_tokenizer
    from sftpipe.render import ChatRenderer
    from sftpipe.templates import load_template

    tok = load_tokenizer(sft_run)
    renderer = ChatRenderer(tok, load_template("model", tok))
    return encode_pairs(iter_pairs(data_dir / "pairs.jsonl"), renderer, max_length=128, max_prompt_length=96).rows


def test_the_reference_is_the_sft_policy_not_the_base(lora_dpo, sft_run, data_dir):
    result, cache = lora_dpo
    (cached,) = list(cache.glob("*.safetensors"))
    ref = load_file(cached)
    rows = _rows(sft_run, data_dir)
    sft, _, info = load_run(sft_run)
    base = load_base(info)
    for side in ("chosen", "rejected"):
        want = completion_logps(sft, rows, side).float()
        torch.testing.assert_close(ref[f"ref_{side}_logps"], want, rtol=0, atol=1e-3)
        assert (completion_logps(base, rows, side).float() - want).abs().min() > 0.05  # the base differs
    assert result.reference["sha256"] and result.reference["checkpoint"] is None
    assert result.reference["run"] == str(sft_run.resolve())


def test_the_run_folder_is_a_complete_dpo_run_on_the_true_base(lora_dpo, sft_run):
    result, _ = lora_dpo
    info = require_complete(result.run_dir)
    sft = read_info(sft_run)
    assert info.kind == "dpo" and info.base_model == sft.base_model and info.mode == "lora"
    assert info.template.sha256 == sft.template.sha256 and info.parity["token_mismatches"] == 0
    assert set(info.reference) >= {"run", "checkpoint", "sha256"}
    assert info.data["train"]["pairs"] == 24 and info.data["train_hash"]
    names = {p.name for p in result.run_dir.iterdir()}
    assert {"adapter_model.safetensors", "generation_config.json", "parity.json", "README.md"} <= names
    assert "ref" not in names  # TRL's frozen reference adapter is not saved with the result
    card = (result.run_dir / "README.md").read_text()
    assert "DPO preference pass" in card and info.reference["sha256"] in card and "beta 0.1" in card
    assert "24 preference pairs" in card and info.data["train_hash"] in card
    head = yaml.safe_load(card.split("---\n")[1])
    assert "dpo" in head["tags"] and head["sftpipe"]["reference"]["name"] == "sft"
    model, _, _ = load_run(result.run_dir)  # loads like any run: adapter on the base
    sft_model, _, _ = load_run(sft_run)
    a = dict(model.named_parameters())
    changed = [n for n, p in sft_model.named_parameters() if "lora_" in n and not torch.equal(p, a[n])]
    assert changed  # DPO moved the SFT adapter


def test_a_full_sft_reference_gives_its_saved_weights_as_reference(make_dpo, sft_full_run, data_dir):
    """Without precomputed log-probs the reference is a second copy of the saved SFT weights, so the loss still
    starts at ln 2, and the result is full weights."""
    result = run(make_dpo("dpo.max_steps=2", "dpo.precompute_ref_log_probs=false", reference=sft_full_run),
                 progress=False)
    assert _logs(result.run_dir, "loss")[0] == pytest.approx(math.log(2), abs=1e-5)
    info = require_complete(result.run_dir)
    assert info.mode == "full" and (result.run_dir / "model.safetensors").is_file()


def test_refuses_another_template_or_a_missing_reference_naming_both(make_dpo, sft_run, tmp_path):
    with pytest.raises(ConfigError) as e:
        run(make_dpo("template.name=chatml"), progress=False)
    text = str(e.value)
    assert "template" in text and "'chatml'" in text and read_info(sft_run).template.sha256 in text
    with pytest.raises(ConfigError, match="reference: missing"):
        run(make_dpo("dpo.reference="), progress=False)
    with pytest.raises(ConfigError, match="neither an SFT run"):
        run(make_dpo(reference=tmp_path), progress=False)
    with pytest.raises(ConfigError, match=r"dpo.train: .*nope.jsonl: file not found; fix: give an existing"):
        run(make_dpo(f"dpo.train={tmp_path / 'nope.jsonl'}"), progress=False)  # not a raw FileNotFoundError
    assert not (tmp_path / "runs" / "dpo").exists()


def test_the_reference_log_probs_are_cached_by_data_and_reference(make_dpo, ref_cache):
    first = run(make_dpo("dpo.max_steps=1", name="a"), progress=False)
    files = list(ref_cache.glob("*.safetensors"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    second = run(make_dpo("dpo.max_steps=1", name="b"), progress=False)
    assert files[0].stat().st_mtime_ns == stamp  # reused, not recomputed
    assert _logs(first.run_dir, "loss") == _logs(second.run_dir, "loss")
    info = json.loads((second.run_dir / "run.json").read_text())
    assert info["results"]["pairs"] == 24
