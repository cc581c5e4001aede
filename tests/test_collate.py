import doctest
import random

import pytest
import torch
import torch.nn.functional as F

import sftpipe.collate
from sftpipe.collate import PackedCollator, PaddedCollator
from sftpipe.labels import IGNORE_INDEX
from sftpipe.models import load_tokenizer, tiny_model
from sftpipe.pack import pack

ATTN = ["sdpa", "eager"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def model(tokenizer):
    m = tiny_model(tokenizer).float().eval()
    # Llama's default; with it on and no guard, transformers silently ignores packed position_ids
    assert m.config.use_cache is True
    return m


def make_examples(tokenizer, n, seed, lo=4, hi=30):
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        length = rng.randint(lo, hi)
        prompt = rng.randint(0, length - 1)  # 0: even the first token is labelled; packing must not train it
        ids = [rng.randrange(len(tokenizer)) for _ in range(length)]
        labels = [IGNORE_INDEX] * prompt + ids[prompt:]
        examples.append({"input_ids": ids, "labels": labels})
    return examples


def reference_loss(model, examples):
    """Sum of per-token losses over every example run alone, divided by the number of trained tokens."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            logits = model(input_ids=torch.tensor([ex["input_ids"]]), use_cache=False).logits[0]
            target = torch.tensor(ex["labels"][1:])
            total += F.cross_entropy(logits[:-1].double(), target, ignore_index=IGNORE_INDEX, reduction="sum").item()
            count += int((target != IGNORE_INDEX).sum())
    return total / count


@pytest.mark.parametrize("attn", ATTN)
def test_packed_loss_equals_unpacked_loss(model, tokenizer, attn):
    model.set_attn_implementation(attn)
    examples = make_examples(tokenizer, 12, seed=0)
    assert any(ex["labels"][0] != IGNORE_INDEX for ex in examples)
    packs, report = pack(examples, 64)
    assert report.packs_or_batches > 1 and sum(len(p["seq_lens"]) > 1 for p in packs) >= 2
    batch = PackedCollator()(packs)
    assert "attention_mask" not in batch and batch["input_ids"].shape == (1, report.tokens)
    with torch.no_grad():
        loss = model(**batch).loss.item()
    assert loss == pytest.approx(reference_loss(model, examples), abs=1e-5)


@pytest.mark.parametrize("attn", ATTN)
def test_no_attention_across_examples_in_a_pack(model, tokenizer, attn):
    model.set_attn_implementation(attn)
    a, b, c = make_examples(tokenizer, 3, seed=1, lo=10, hi=20)
    lens = [len(a["input_ids"]), len(b["input_ids"])]
    b_span = slice(lens[0], lens[0] + lens[1])
    changed_a = {**a, "input_ids": [(t + 1) % len(tokenizer) for t in a["input_ids"]]}

    def row(first):
        return {"input_ids": first["input_ids"] + b["input_ids"] + c["input_ids"],
                "labels": first["labels"] + b["labels"] + c["labels"],
                "seq_lens": [len(first["input_ids"]), lens[1], len(c["input_ids"])]}

    collate = PackedCollator()
    with torch.no_grad():
        packed = model(**collate([row(a)])).logits[0]
        packed_changed = model(**collate([row(changed_a)])).logits[0]
        alone = model(input_ids=torch.tensor([b["input_ids"]]), use_cache=False).logits[0]
        causal = model(input_ids=collate([row(a)])["input_ids"]).logits[0]
        causal_changed = model(input_ids=collate([row(changed_a)])["input_ids"]).logits[0]
    torch.testing.assert_close(packed[b_span], packed_changed[b_span], rtol=0, atol=1e-6)
    torch.testing.assert_close(packed[b_span], alone, rtol=0, atol=1e-5)
    # control: with a plain causal mask (no position_ids) example B does see A, so the check above can fail
    assert (causal[b_span] - causal_changed[b_span]).abs().max() > 1e-3


@pytest.mark.parametrize("attn", ATTN)
def test_padded_loss_equals_unpadded_loss(model, tokenizer, attn):
    model.set_attn_implementation(attn)
    examples = make_examples(tokenizer, 6, seed=2)
    batch = PaddedCollator(tokenizer.pad_token_id, pad_to_multiple_of=8)(examples)
    assert batch["input_ids"].shape[1] % 8 == 0
    assert batch["input_ids"].shape[1] > min(len(ex["input_ids"]) for ex in examples)  # some rows really padded
    with torch.no_grad():
        loss = model(**batch).loss.item()
    assert loss == pytest.approx(reference_loss(model, examples), abs=1e-5)


def test_packed_collator_matches_transformers_flattening_conventions():
    packs = [{"input_ids": [1, 2, 3, 4, 5], "labels": [-100, 2, 3, -100, 5], "position_ids": [0, 1, 2, 0, 1],
              "seq_lens": [3, 2]},
             {"input_ids": [6, 7, 8, 9], "labels": [6, 7, 8, 9], "position_ids": [0, 1, 2, 3], "seq_lens": [4]}]
    batch = PackedCollator()(packs)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    assert batch["labels"].tolist() == [[-100, 2, 3, -100, 5, -100, 7, 8, 9]]
    assert batch["cu_seq_lens_q"].tolist() == batch["cu_seq_lens_k"].tolist() == [0, 3, 5, 9]
    assert batch["cu_seq_lens_q"].dtype == torch.int32
    assert batch["max_length_q"] == batch["max_length_k"] == 4
    assert batch["use_cache"] is False
    # Trainer's remove_unused_columns drops seq_lens; boundaries then come from position_ids
    without_seq_lens = PackedCollator()([{k: v for k, v in p.items() if k != "seq_lens"} for p in packs])
    assert all(torch.equal(batch[k], without_seq_lens[k]) for k in ("input_ids", "labels", "position_ids"))
    with pytest.raises(ValueError, match="seq_lens \\[3, 3\\] do not split its 5 tokens"):
        PackedCollator()([{**packs[0], "seq_lens": [3, 3]}])


def test_padded_collator_pads_right_and_truncates():
    features = [{"input_ids": [5, 6, 7, 8, 9], "labels": [-100, 6, 7, 8, 9]},
                {"input_ids": [3, 4], "labels": [-100, 4]}]
    batch = PaddedCollator(0, max_length=4)(features)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [3, 4, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7, 8], [-100, 4, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    with pytest.raises(ValueError, match="no trained token left after truncation"):
        PaddedCollator(0, max_length=2)([{"input_ids": [1, 2, 3], "labels": [-100, -100, 3]}])
    with pytest.raises(ValueError, match="pad_token_id is None"):
        PaddedCollator(None)


def test_packed_collator_trains_under_trainer(tokenizer, tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    packs, _ = pack(make_examples(tokenizer, 16, seed=3), 64)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, use_cpu=True,
                             report_to=[], save_strategy="no", learning_rate=1e-3, disable_tqdm=True)
    trainer = Trainer(model=tiny_model(tokenizer), args=args, train_dataset=Dataset.from_list(packs),
                      data_collator=PackedCollator())
    before = trainer.model.model.embed_tokens.weight.detach().clone()
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(before, trainer.model.model.embed_tokens.weight)


def test_docstring_examples():
    assert doctest.testmod(sftpipe.collate).failed == 0
