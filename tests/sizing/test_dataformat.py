import pytest

from ftplan.sizing.dataformat import BY_KEY, check, detect, sequences

MSGS = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


@pytest.mark.parametrize("record,key", [
    ({"messages": MSGS}, "messages"),
    ({"text": "raw"}, "text"),
    ({"prompt": "p", "completion": "c"}, "prompt_completion"),
    ({"prompt": "p", "chosen": "a", "rejected": "b"}, "preference"),
    ({"chosen": MSGS, "rejected": MSGS}, "preference_implicit"),
    ({"prompt": "p", "completion": "c", "label": False}, "unpaired_preference"),
    ({"prompt": "p"}, "prompt_only"),
    ({"prompt": [{"role": "user", "content": "p"}]}, "prompt_only"),
    ({"input": {"messages": MSGS[:1]}, "preferred_output": MSGS[1:], "non_preferred_output": MSGS[1:]},
     "openai_preference"),
])
def test_detects_each_trl_format(record, key):
    assert detect(record).key == key
    assert check(record, BY_KEY[key]) == []


def test_unknown_fields_detect_nothing():
    assert detect({"question": "q", "answer": "a"}) is None


def test_missing_field_is_named():
    [f] = check({"prompt": "p", "chosen": "a"}, BY_KEY["preference"])
    assert f.kind == "missing_field" and "'rejected'" in f.detail


def test_other_complete_format_is_mixed():
    [f] = check({"text": "x"}, BY_KEY["preference"])
    assert f.kind == "mixed_format" and "raw text" in f.detail


def test_empty_assistant_turn_is_a_warning_not_an_error():
    [f] = check({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]},
                BY_KEY["messages"])
    assert f.kind == "empty_turn" and not f.is_error


@pytest.mark.parametrize("record", [
    {"messages": "not a list"},
    {"messages": [{"content": "no role"}]},
    {"messages": [{"role": "user", "content": 3}]},
])
def test_malformed_messages_are_errors(record):
    [f] = check(record, BY_KEY["messages"])
    assert f.is_error and f.kind == "bad_value"


def test_kto_label_must_be_boolean():
    [f] = check({"prompt": "p", "completion": "c", "label": "maybe"}, BY_KEY["unpaired_preference"])
    assert f.kind == "bad_value" and "label" in f.detail


def test_preference_forwards_two_sequences():
    seqs = sequences({"prompt": "Q:", "chosen": "good", "rejected": "bad"}, BY_KEY["preference"])
    assert seqs == ["Q:good", "Q:bad"]
    conv = sequences({"prompt": MSGS[:1], "chosen": MSGS[1:], "rejected": MSGS[1:]}, BY_KEY["preference"])
    assert conv[0] == MSGS and len(conv) == 2
