"""DPO tokenization: a completion's tokens are exactly what SFT trains for that reply, and against TRL's own
DPO tokenization the log-probs are equal once the known convention differences are excluded."""

from __future__ import annotations

import pytest
import torch

from sftpipe.config import load_config
from sftpipe.conversation import Conversation
from sftpipe.dpo.encode import encode_pair
from sftpipe.dpo.pairs import parse_pair
from sftpipe.dpo.reference import completion_logps
from sftpipe.render import ChatRenderer

from .conftest import renderer_for

PAIRS = [
    {"prompt": "Where is my order?", "chosen": "Please share your order ID.",
     "rejected": "Thank you for reaching out! Please share your order ID."},
    {"prompt": [{"role": "system", "content": "You are Harbor Support."},
                {"role": "user", "content": "Refund?"}, {"role": "assistant", "content": "Order ID?"},
                {"role": "user", "content": "H-1234"}],
     "chosen": [{"role": "assistant", "content": "Refund of $20 for H-1234 is on its way in 5 days."}],
     "rejected": [{"role": "assistant", "content": "Instant refund!"}]},
    {"prompt": "Type <|im_end|> for me", "chosen": "Here: <|im_end|>", "rejected": "No."},
]


@pytest.fixture(scope="module")
def renderer():
    return renderer_for(load_config())


@pytest.mark.parametrize("record", PAIRS, ids=["string", "multi-turn", "control-text"])
def test_completions_equal_the_sft_trained_tokens_of_the_same_reply(renderer, record):
    pair = parse_pair(record)
    row = encode_pair(renderer, pair)
    sft = ChatRenderer(renderer.tokenizer, renderer.template, train_on="last_assistant")
    for side in ("chosen", "rejected"):
        reply = pair.chosen if side == "chosen" else pair.rejected
        (ex,) = sft.render(Conversation([*pair.prompt, reply]))
        trained = [t for t in ex.labels if t != -100]
        assert row[f"{side}_ids"] == trained  # reply + end-of-turn, exactly SFT's trained tokens
        assert row["prompt_ids"] == sft.encode_prompt([m.to_template() for m in pair.prompt])  # serving's prompt
        assert row[f"{side}_ids"][-1] == renderer.tokenizer.convert_tokens_to_ids("<|im_end|>")
    # control strings typed in content stay text: one <|im_end|> control token, the one that ends the turn
    im_end = renderer.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert row["chosen_ids"].count(im_end) == 1
    typed = sum(m.content.count("<|im_end|>") for m in pair.prompt)
    shown = renderer.render_text([m.to_template() for m in pair.prompt], add_generation_prompt=True)
    assert row["prompt_ids"].count(im_end) == shown.count("<|im_end|>") - typed


def test_log_probs_equal_trls_dpo_tokenization_except_the_newline_after_the_turn_end(renderer, tmp_path):
    """TRL 1.16 renders prompt + reply with apply_chat_template and trains everything after the prompt, so its
    ChatML completion ends `<|im_end|>`, `\\n`; sftpipe's ends at `<|im_end|>` (what SFT trains). The shared tokens
    are identical and so are their log-probs; TRL's sum has one more term, the `\\n`."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from sftpipe.models import tiny_model

    tok = renderer.tokenizer
    model = tiny_model(tok, seed=1)
    records = [{"prompt": [{"role": "user", "content": r["prompt"]}], "chosen": [{"role": "assistant",
                "content": r["chosen"]}], "rejected": [{"role": "assistant", "content": r["rejected"]}]}
               for r in PAIRS[:1]] + [PAIRS[1]]
    args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], max_length=None,
                     per_device_train_batch_size=2, activation_checkpointing=False)
    trl_rows = DPOTrainer(model=model, ref_model=tiny_model(tok, seed=1), args=args,
                          train_dataset=Dataset.from_list(records), processing_class=tok).train_dataset
    newline = tok.encode("\n", add_special_tokens=False)
    ours = [encode_pair(renderer, parse_pair(r)) for r in records]
    model = tiny_model(tok, seed=1)  # TRL patched the other one's forward
    for side in ("chosen", "rejected"):
        theirs = [{"prompt_ids": r["prompt_ids"], f"{side}_ids": r[f"{side}_ids"]} for r in trl_rows]
        for a, b in zip(ours, theirs):
            assert b["prompt_ids"] == a["prompt_ids"]
            assert b[f"{side}_ids"] == a[f"{side}_ids"] + newline  # the one convention difference here
        trimmed = [{"prompt_ids": b["prompt_ids"], f"{side}_ids": b[f"{side}_ids"][:-len(newline)]} for b in theirs]
        torch.testing.assert_close(completion_logps(model, ours, side), completion_logps(model, trimmed, side),
                                   rtol=0, atol=1e-6)
        full = completion_logps(model, theirs, side)
        assert (full < completion_logps(model, ours, side)).all()  # TRL also scores the "\n"
