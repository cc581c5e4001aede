"""Config: sections, shorthands, overrides, and every error reported at once."""

from __future__ import annotations

import pytest

from sftpipe.config import load_config, parse_overrides
from sftpipe.errors import ConfigError


def test_defaults_and_shorthands(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: ./my-model\ntemplate: chatml\ndata: {train: a.jsonl}\n")
    cfg = load_config(p)
    assert cfg.model.name == "./my-model" and cfg.template.name == "chatml"
    assert cfg.data.train == ["a.jsonl"] and cfg.render.max_length == 2048


def test_set_overrides_win_over_file_and_flags_win_over_set(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("render: {max_length: 1024}\n")
    cfg = load_config(p, ["render.max_length=512", "render.train_on=last_assistant"])
    assert cfg.render.max_length == 512 and cfg.render.train_on == "last_assistant"
    cfg = load_config(p, ["render.max_length=512"], flags={"render.max_length": 256, "model.name": None})
    assert cfg.render.max_length == 256 and cfg.model.name == "smollm2-135m-instruct"


def test_all_errors_at_once_with_paths_and_allowed_values(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("render: {max_length: 1, truncation: chop, bogus: 1}\ndata: {on_error: ignore}\nnope: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    problems = info.value.problems
    assert len(problems) == 5
    text = "\n".join(problems)
    assert "render.max_length" in text and "render.truncation" in text and "'drop_oldest_turns'" in text
    assert "render.bogus: unknown key (allowed: max_length, train_on, truncation" in text
    assert "data.on_error" in text and "nope: unknown key" in text


def test_bad_yaml_and_bad_override_are_config_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("render: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["render.max_length"])
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")


def test_a_section_given_twice_is_an_error_not_a_silent_overwrite(tmp_path):
    path = tmp_path / "sftpipe.yaml"
    path.write_text("render:\n  max_length: 10\nmodel:\n  name: x\nrender:\n  train_on: last_assistant\n")
    with pytest.raises(ConfigError, match=r"(?s)line 5: key 'render' appears twice \(first on line 1\).*fix: merge"):
        load_config(path)


def test_a_config_that_is_not_utf8_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"(?s)latin1.yaml.*not UTF-8 .*fix: save the file as UTF-8"):
        load_config(path)


def test_rules_across_keys_are_reported_all_at_once_before_anything_loads():
    """What the Trainer would refuse after the model loaded (save_steps not a multiple of eval_steps with held-out
    data), and keys that would silently do nothing without held-out data."""
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["data.eval=e.jsonl", "train.eval_steps=5", "train.save_steps=2",
                               "dpo.early_stopping_patience=2", "train.fsdp=full_shard", "train.deepspeed=zero2"])
    problems = err.value.problems
    assert len(problems) == 3
    assert problems[0].startswith("train.save_steps: 2 is not a multiple of train.eval_steps (5)")
    assert "fix: set dpo.eval" in problems[1] and "choose one way to shard" in problems[2]
    with pytest.raises(ConfigError, match=r"train.eval_limit: 3 needs held-out data"):
        load_config(overrides=["train.eval_limit=3"])
    load_config(overrides=["data.eval=e.jsonl", "train.eval_steps=5", "train.save_steps=10", "train.eval_limit=3"])
    load_config(overrides=["train.eval_steps=5", "train.save_steps=2"])  # no held-out data: no best checkpoint
