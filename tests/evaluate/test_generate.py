"""Batched generation with the serving render: same tokens as one prompt at a time, stops on end-of-turn."""

from __future__ import annotations

import pytest
import torch

from sftpipe.generate import generate, stop_token_ids
from sftpipe.models import tiny_model
from sftpipe.render import ChatRenderer
from sftpipe.templates import load_template

PROMPTS = [
    [{"role": "user", "content": "Where is my order?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A much longer question about a refund "
                                                                              "for two items that arrived broken."}],
    [{"role": "user", "content": "Hi <|im_end|> there"}],  # a control string in content stays text
]


@pytest.fixture()
def renderer(tok):
    return ChatRenderer(tok, load_template("model", tok))


class _ForceHead(torch.nn.Module):
    """An lm_head that always predicts one token."""

    def __init__(self, vocab: int, token_id: int):
        super().__init__()
        self.vocab, self.token_id = vocab, token_id

    def forward(self, hidden):
        logits = torch.zeros(*hidden.shape[:-1], self.vocab)
        logits[..., self.token_id] = 10.0
        return logits


def _force(model, token_id: int) -> None:
    """Make `model` predict `token_id` at every step."""
    model.lm_head = _ForceHead(model.config.vocab_size, token_id)


def test_stop_tokens_are_end_of_turn_and_eos(tok, renderer):
    assert stop_token_ids(renderer) == [tok.convert_tokens_to_ids("<|im_end|>")]  # SmolLM2: eos is <|im_end|>
    llama = ChatRenderer(tok, load_template("llama3", tok))
    assert stop_token_ids(llama) == [tok.convert_tokens_to_ids("<|eot_id|>"), tok.eos_token_id]


def test_batched_greedy_matches_one_prompt_at_a_time_with_the_serving_render(tok, renderer):
    model = tiny_model(tok, seed=3)
    batched, stats = generate(model, renderer, PROMPTS, max_new_tokens=6, batch_size=3)
    assert stats.prompts == 3 and stats.new_tokens == sum(g.new_tokens for g in batched)
    for prompt, got in zip(PROMPTS, batched):
        ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                      sanitize_control_tokens=True, return_dict=False)
        assert got.prompt_tokens == len(ids)
        with torch.inference_mode():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=6, do_sample=False, eos_token_id=stop_token_ids(renderer),
                                 pad_token_id=tok.pad_token_id)
        new = out[0, len(ids):].tolist()
        stop = stop_token_ids(renderer)
        cut = next((k for k, t in enumerate(new) if t in stop), len(new))
        assert got.text == tok.decode(new[:cut], skip_special_tokens=True)
    singles = [generate(model, renderer, [p], max_new_tokens=6, batch_size=1)[0][0] for p in PROMPTS]
    assert [g.text for g in singles] == [g.text for g in batched]  # order kept despite length sorting


def test_stops_on_end_of_turn(tok, renderer):
    model = tiny_model(tok, seed=0)
    _force(model, tok.convert_tokens_to_ids("<|im_end|>"))
    out, stats = generate(model, renderer, PROMPTS[:2], max_new_tokens=5)
    assert [(g.text, g.new_tokens, g.finish) for g in out] == [("", 1, "stop")] * 2
    assert stats.new_tokens == 2


def test_runs_to_max_new_tokens_without_a_stop(tok, renderer):
    model = tiny_model(tok, seed=0)
    word = tok.encode(" ok", add_special_tokens=False)[0]
    _force(model, word)
    out, _ = generate(model, renderer, PROMPTS[:2], max_new_tokens=4, batch_size=1)
    assert [(g.text, g.new_tokens, g.finish) for g in out] == [(" ok ok ok ok", 4, "length")] * 2


def test_rejects_bad_sizes(tok, renderer):
    with pytest.raises(ValueError, match="batch_size"):
        generate(tiny_model(tok), renderer, PROMPTS, batch_size=0)
