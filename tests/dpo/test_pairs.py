"""Preference pairs at the boundary: both record shapes read, and every bad pair is a one-line error with
file:line, reason and fix (or a reject with its reason under on_error: skip)."""

from __future__ import annotations

import json

import pytest

from sftpipe.config import load_config
from sftpipe.dpo.encode import encode_pair, encode_pairs
from sftpipe.dpo.pairs import iter_pairs, parse_pair
from sftpipe.errors import RecordError

from .conftest import renderer_for

U = {"role": "user", "content": "Where is my order?"}


def A(text):
    return {"role": "assistant", "content": text}


@pytest.fixture(scope="module")
def renderer():
    return renderer_for(load_config(overrides=["render.max_length=256"]))


def test_both_shapes_give_the_same_pair():
    explicit = parse_pair({"prompt": [U], "chosen": [A("Order ID, please.")], "rejected": [A("Hello! Order ID?")]})
    strings = parse_pair({"prompt": U["content"], "chosen": "Order ID, please.", "rejected": "Hello! Order ID?"})
    implicit = parse_pair({"chosen": [U, A("Order ID, please.")], "rejected": [U, A("Hello! Order ID?")]})
    assert explicit.to_record() == strings.to_record() == implicit.to_record()
    assert [m.role for m in explicit.prompt] == ["user"] and explicit.chosen.content == "Order ID, please."


BAD = [
    ({"prompt": "hi", "chosen": "Same.", "rejected": "Same."}, "identical_replies"),
    ({"prompt": "hi", "chosen": "  ", "rejected": "No."}, "empty_chosen"),
    ({"prompt": "hi", "chosen": "Yes.", "rejected": []}, "empty_rejected"),
    ({"prompt": "hi", "chosen": [A("Yes."), {"role": "user", "content": "ok"}], "rejected": "No."},
     "not_assistant_last"),
    ({"chosen": [U, A("Yes.")], "rejected": [U, A("No."), {"role": "user", "content": "?"}]}, "not_assistant_last"),
    ({"chosen": [U, A("Yes.")], "rejected": [{"role": "user", "content": "Other"}, A("No.")]}, "prefix_differs"),
    ({"prompt": [U, A("Earlier reply.")], "chosen": "Yes.", "rejected": "No."}, "prompt_ends_on_assistant"),
    ({"prompt": "hi", "chosen": "Yes."}, "missing_field"),
    ({"prompt": "", "chosen": "Yes.", "rejected": "No."}, "empty_prompt"),
]


@pytest.mark.parametrize(("record", "reason"), BAD, ids=[r for _, r in BAD])
def test_each_bad_pair_is_a_located_one_line_error_with_a_fix(tmp_path, record, reason):
    path = tmp_path / "pairs.jsonl"
    good = {"prompt": "hi", "chosen": "Yes.", "rejected": "No."}
    path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n", encoding="utf-8")
    items = list(iter_pairs(path))
    assert not isinstance(items[0], RecordError)
    err = items[1]
    assert isinstance(err, RecordError) and err.reason == reason
    text = str(err)
    assert text.startswith(f"{path}:2: ") and "Fix: " in text and "\n" not in text


def test_a_prompt_whose_render_is_not_a_prefix_is_refused(tmp_path):
    # A template that writes a different header for the prompt once a reply follows it.
    jinja = tmp_path / "odd.jinja"
    jinja.write_text("{% for m in messages %}<|im_start|>{{ m.role }}{% if loop.last and m.role == 'assistant' %}"
                     "!{% endif %}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                     "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    odd = renderer_for(load_config(overrides=[f"template.name={jinja}"]))
    pair = parse_pair({"prompt": "hi", "chosen": "Yes.", "rejected": "No."})
    with pytest.raises(RecordError) as e:
        encode_pair(odd, pair)
    assert e.value.reason == "prompt_not_prefix" and "Fix: " in str(e.value)


def test_skip_rejects_with_reasons_and_the_counts_add_up(tmp_path, renderer):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "hi", "chosen": "Yes.", "rejected": "No."}, {"prompt": "hi", "chosen": "x", "rejected": "x"},
            "not an object", {"prompt": "hi " * 300, "chosen": "Yes.", "rejected": "No."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = encode_pairs(iter_pairs(path), renderer, max_length=256, max_prompt_length=128, on_error="skip")
    assert out.records_in == 4 and len(out.rows) == 1
    assert [(r["reason"], r["line"]) for r in out.rejects] == [("identical_replies", 2), ("not_object", 3),
                                                                 ("too_long", 4)]
    with pytest.raises(RecordError, match=r"pairs.jsonl:2: .*the same reply"):
        encode_pairs(iter_pairs(path), renderer, max_length=256, max_prompt_length=128)
