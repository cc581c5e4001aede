"""Model folders that do not load fail with one line naming the folder and the fix; pickles are never loaded."""

from __future__ import annotations

import pytest
import torch

from sftpipe.errors import ModelError
from sftpipe.models import HUB_IDS, load_model, load_tokenizer, tiny_model
from sftpipe.runs.card import render_card

@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m-instruct")

def test_a_pickle_checkpoint_is_refused_with_the_fix(tmp_path, tok):
    model = tiny_model(tok)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelError, match=r"pytorch_model.bin.*never loads.*fix: convert them to safetensors") as e:
        load_model(str(tmp_path))
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)

def test_a_model_folder_without_tokenizer_files_names_the_folder_and_fix(tmp_path, tok):
    tiny_model(tok).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match=r"no loadable tokenizer.*fix: save the tokenizer") as e:
        load_tokenizer(str(tmp_path))
    assert str(tmp_path) in str(e.value)

def test_the_card_names_the_hub_id_and_keeps_the_local_path():
    train = dict.fromkeys(("scheduler", "warmup_ratio", "epochs", "max_steps", "batch_size", "grad_accum",
                           "weight_decay", "seed", "max_grad_norm", "gradient_checkpointing"), 0)
    info = {"config": {"name": "r", "train": train,
                       "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
                       "render": {"max_length": 64}},
            "base_model": "smollm2-135m-instruct", "base_model_path": "/cache/models/smollm2-135m-instruct",
            "mode": "lora", "learning_rate": 1e-4, "world_size": 1, "precision": "fp32", "batching": "padded",
            "effective_batch": {"sequences": 4, "tokens": 100}, "template": {"name": "t", "sha256": "0", "source": ""},
            "data": {"train_hash": "h", "eval_hash": None, "hash_definition": "d"}, "mask_report": {}}
    card = render_card(info)
    head = card.split("---")[1]
    assert f"base_model: {HUB_IDS['smollm2-135m-instruct']}" in head
    assert "path: /cache/models/smollm2-135m-instruct" in head
    assert "Train hash `h`, no held-out split (d)." in card and "None" not in card.split("## Data")[1][:80]
