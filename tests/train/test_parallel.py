"""Sharded training keys: refused where accelerate would not shard (a CPU), FSDP1 + LoRA in half precision
refused with a pointer to FSDP2, DeepSpeed presets and files read and checked, and the loss taken inside the
forward where the output layer is sharded (its chunked path reads the weight after the forward)."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import SimpleNamespace

import pytest

from sftpipe.cli import main
from sftpipe.config import load_config
from sftpipe.errors import ConfigError
from sftpipe.train import parallel
from sftpipe.train.parallel import PRESETS, check_sharding, deepspeed_config, shards_parameters
from sftpipe.train.trainer import TrainedPositions


def tcfg(*overrides: str):
    return load_config(overrides=list(overrides)).train


@pytest.mark.parametrize("key, value", [("fsdp", "full_shard auto_wrap"), ("deepspeed", "zero2")])
def test_sharding_on_a_cpu_is_a_one_line_error_before_anything_loads(make_cfg, monkeypatch, capsys, tmp_path,
                                                                      key, value):
    cfg = make_cfg()
    monkeypatch.setattr(sys, "argv", ["sftpipe", "train", "--model", cfg.model.name, "--input", cfg.data.train[0],
                                      "--set", f"train.output_dir={tmp_path}", "--set", f"train.{key}={value}"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"train.{key} would not shard anything" in err and "DDP" in err
    assert not any(tmp_path.iterdir())  # refused before the run folder was made


def test_fsdp1_with_lora_in_half_precision_points_to_fsdp2():
    cfg = tcfg("train.fsdp=full_shard auto_wrap", 'train.fsdp_config={"version": 1}')
    with pytest.raises(ConfigError, match="use FSDP2"):
        check_sharding(cfg, "cuda", "bf16")
    assert check_sharding(cfg, "cuda", "fp32") is None  # one dtype: FSDP1 flattens it fine
    assert check_sharding(tcfg("train.fsdp=full_shard auto_wrap"), "cuda", "bf16") is None  # FSDP2
    assert check_sharding(tcfg("train.fsdp=full_shard", 'train.fsdp_config={"version": 1}', "train.mode=full"),
                          "cuda", "bf16") is None


def test_deepspeed_presets_files_and_installation(tmp_path, monkeypatch):
    for name, preset in PRESETS.items():
        got = deepspeed_config(name)
        assert got == preset and got is not preset  # a copy: transformers fills in its "auto" values
        assert got["zero_optimization"]["stage"] == int(name[-1])
    assert PRESETS["zero3"]["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    own = tmp_path / "ds.json"
    own.write_text(json.dumps({"zero_optimization": {"stage": 1}}))
    assert deepspeed_config(str(own)) == {"zero_optimization": {"stage": 1}}
    own.write_text(json.dumps({"zero_optimization": {"stage": 5}}))
    with pytest.raises(ConfigError, match="stage is 5"):
        deepspeed_config(str(own))
    with pytest.raises(ConfigError, match="cannot read it"):
        deepspeed_config(str(tmp_path / "missing.json"))
    real = importlib.util.find_spec

    def installed(yes: bool):
        found = object() if yes else None
        monkeypatch.setattr(parallel.importlib.util, "find_spec",
                            lambda n, *a: found if n == "deepspeed" else real(n, *a))

    installed(False)
    with pytest.raises(ConfigError, match=r"pip install 'sftpipe\[deepspeed\]'"):
        check_sharding(tcfg("train.deepspeed=zero3"), "cuda", "bf16")
    installed(True)
    assert check_sharding(tcfg("train.deepspeed=zero3"), "cuda", "bf16") == PRESETS["zero3"]


def test_a_sharded_output_layer_is_never_read_after_the_forward(tiny_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    model.lm_head.weight.requires_grad_(False)
    assert TrainedPositions(model).chunked and not TrainedPositions(model, whole_head=False).chunked
    assert shards_parameters(SimpleNamespace(is_fsdp_enabled=False, is_deepspeed_enabled=False)) is None
    def fsdp(version: int):
        plugin = SimpleNamespace(fsdp_version=version)
        return SimpleNamespace(is_fsdp_enabled=True, is_deepspeed_enabled=False,
                               accelerator=SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin)))

    assert "FSDP1" in shards_parameters(fsdp(1)) and shards_parameters(fsdp(2)) is None  # see test_fsdp.py
    import transformers.integrations as integrations

    monkeypatch.setattr(integrations, "is_deepspeed_zero3_enabled", lambda: True)
    assert "ZeRO-3" in shards_parameters(SimpleNamespace(is_fsdp_enabled=False, is_deepspeed_enabled=True))
    monkeypatch.setattr(integrations, "is_deepspeed_zero3_enabled", lambda: False)
    assert shards_parameters(SimpleNamespace(is_fsdp_enabled=False, is_deepspeed_enabled=True)) is None
