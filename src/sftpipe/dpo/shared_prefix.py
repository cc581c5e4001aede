"""One row per preference pair: the prompt once, then the chosen and the rejected reply, each seeing only the prompt.

TRL's collator writes a pair as two rows (prompt + chosen, prompt + rejected), so the prompt runs forward and
backward twice. Here a pair is one row `prompt | chosen | rejected`: positions restart at the end of the prompt for
the rejected reply and a 4-D mask keeps the rejected tokens from seeing the chosen ones, so every completion token's
hidden state is the one it has in its own row, and the prompt's tokens are computed once. The scored positions are
listed explicitly (`score_*`): position `from` predicts the token at `to`, which belongs to log-prob slot `slot`
(pair b's chosen reply is slot b, its rejected reply slot B + b, TRL's chosen-then-rejected order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def pair_layout(prompt: int, chosen: int, rejected: int) -> dict[str, list[int]]:
    """Positions of a packed pair of lengths (prompt, chosen, rejected): `position_ids`, and for every completion
    token the position that predicts it (`from`), its own position (`to`) and whether it is rejected (`side` 1).

    >>> lay = pair_layout(2, 2, 3)
    >>> lay["position_ids"], lay["from"], lay["to"], lay["side"]
    ([0, 1, 2, 3, 2, 3, 4], [1, 2, 1, 4, 5], [2, 3, 4, 5, 6], [0, 0, 1, 1, 1])
    """
    assert prompt >= 1 and chosen >= 1 and rejected >= 1, "encode_pair guarantees non-empty parts"
    start_c, start_r = prompt, prompt + chosen
    to = list(range(start_c, start_r)) + list(range(start_r, start_r + rejected))
    frm = [t - 1 for t in to]
    frm[chosen] = prompt - 1  # the rejected reply's first token is predicted from the prompt's last position
    return {"position_ids": list(range(start_r)) + list(range(prompt, prompt + rejected)), "from": frm, "to": to,
            "side": [0] * chosen + [1] * rejected}


def pair_mask(prompt: int, chosen: int, rejected: int, width: int) -> torch.Tensor:
    """[width, width] boolean attention of one packed pair: causal, rejected blind to chosen, padding to itself.

    >>> pair_mask(1, 1, 1, 4).int().tolist()
    [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]]
    """
    n = prompt + chosen + rejected
    mask = torch.zeros(width, width, dtype=torch.bool)
    mask[:n, :n] = torch.ones(n, n, dtype=torch.bool).tril()
    mask[prompt + chosen:n, prompt:prompt + chosen] = False
    pad = torch.arange(n, width)
    mask[pad, pad] = True  # a query with no key at all would turn the attention into NaN
    return mask


@dataclass
class SharedPrefixCollator:
    """Pre-tokenized pairs (`prompt_ids`, `chosen_ids`, `rejected_ids`, optional reference log-probs) to one padded
    row per pair, with the 4-D mask (`pair_attention`), `position_ids` and the scored positions."""

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [(len(e["prompt_ids"]), len(e["chosen_ids"]), len(e["rejected_ids"])) for e in examples]
        rows, width = len(examples), max(sum(n) for n in lengths)
        input_ids = torch.full((rows, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros(rows, width, dtype=torch.long)
        position_ids = torch.zeros(rows, width, dtype=torch.long)
        masks, score = [], {"row": [], "from": [], "to": [], "slot": []}
        for b, (e, (p, c, r)) in enumerate(zip(examples, lengths)):
            n = p + c + r
            input_ids[b, :n] = torch.tensor(list(e["prompt_ids"]) + list(e["chosen_ids"]) + list(e["rejected_ids"]))
            attention_mask[b, :n] = 1
            lay = pair_layout(p, c, r)
            position_ids[b, :n] = torch.tensor(lay["position_ids"])
            masks.append(pair_mask(p, c, r, width))
            score["row"] += [b] * (c + r)
            score["from"] += lay["from"]
            score["to"] += lay["to"]
            score["slot"] += [b + side * rows for side in lay["side"]]
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
               "pair_attention": torch.stack(masks)[:, None],
               "chosen_lengths": torch.tensor([c for _, c, _ in lengths]),
               "rejected_lengths": torch.tensor([r for _, _, r in lengths]),
               **{f"score_{k}": torch.tensor(v, dtype=torch.long) for k, v in score.items()}}
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in examples[0]:
                out[key] = torch.tensor([e[key] for e in examples], dtype=torch.float32)
        return out
