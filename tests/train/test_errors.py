"""Clear errors: QLoRA without CUDA names `lora`; bad train/lora keys; merging a full fine-tune."""

from __future__ import annotations

import sys

import pytest
import torch

from sftpipe.cli import main
from sftpipe.config import load_config
from sftpipe.errors import ConfigError, ModelError
from sftpipe.runs import load_run
from sftpipe.stages.merge import run as merge_run
from sftpipe.stages.train import run


@pytest.mark.skipif(torch.cuda.is_available(), reason="QLoRA is allowed where CUDA exists")
def test_qlora_on_cpu_is_a_one_line_error_that_names_lora(make_cfg, monkeypatch, capsys, tmp_path):
    cfg = make_cfg("train.mode=qlora")
    with pytest.raises(ConfigError, match=r"train\.mode=lora") as err:
        run(cfg, progress=False)
    assert "CUDA" in str(err.value)
    monkeypatch.setattr(sys, "argv", ["sftpipe", "train", "--model", cfg.model.name, "--input", cfg.data.train[0],
                                      "--mode", "qlora", "--set", f"train.output_dir={tmp_path}"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert lines[0].startswith("error:") and any("train.mode=lora" in x for x in lines)
    assert not (tmp_path / "run").exists()  # failed before writing anything


def test_train_and_lora_sections_reject_bad_keys_all_at_once():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["train.learning_rate=1e-4", "lora.r=0", "train.mode=adapter"])
    problems = "\n".join(err.value.problems)
    assert "train.learning_rate: unknown key" in problems and "lr" in problems
    assert "lora.r" in problems and "train.mode" in problems
    assert len(err.value.problems) == 3


def test_full_run_saves_plain_weights_and_merge_refuses_it(make_cfg):
    result = run(make_cfg("train.mode=full", "train.max_steps=2", "train.lr=1e-4"), progress=False)
    assert (result.run_dir / "model.safetensors").is_file() and (result.run_dir / "config.json").is_file()
    assert not (result.run_dir / "adapter_config.json").exists()
    model, _, info = load_run(result.run_dir)
    assert info.mode == "full" and not hasattr(model, "peft_config")
    with pytest.raises(ModelError, match="nothing to merge"):
        merge_run(result.run_dir)


def test_train_before_curate_says_to_run_curate(make_cfg, tmp_path):
    curated = tmp_path / "curated"
    cfg = make_cfg(f"curate.out_dir={curated}", f"data.train={curated / 'train.jsonl'}")
    with pytest.raises(ConfigError) as err:
        run(cfg, progress=False)
    assert str(err.value) == (f"data.train: {curated / 'train.jsonl'}: file not found; fix: run `sftpipe curate` "
                              f"first: it writes {curated}/")
    with pytest.raises(ConfigError, match="fix: give an existing JSONL/Parquet file"):  # elsewhere: the plain fix
        run(make_cfg(f"data.train={tmp_path / 'typo.jsonl'}"), progress=False)
