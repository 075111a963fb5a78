import csv
import json

import pytest
from tokenizer_fixture import build_tokenizer

from ftplan.sizing.dataset import SHOW_LOCATIONS, analyze
from ftplan.sizing.errors import DataError


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def chat(i, answer="fine"):
    return {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": answer}]}


def test_counts_examples_and_lengths(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [chat(i, "word " * (i + 1)) for i in range(20)])
    s = analyze(path)
    assert s.examples == 20 and s.sequences == 20 and s.data_format.key == "messages"
    assert s.lengths["p50"] <= s.lengths["p95"] <= s.lengths["max"]
    assert s.tokens == s.tokens_kept  # nothing over 2048
    assert not s.exact and 0 < s.uncertainty < 0.5


def test_every_file_type_reads_the_same_records(tmp_path):
    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(7)]
    jsonl = write_jsonl(tmp_path / "a.jsonl", rows)
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "cols.json").write_text(json.dumps({"prompt": [r["prompt"] for r in rows],
                                                    "completion": [r["completion"] for r in rows]}))
    with open(tmp_path / "a.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["prompt", "completion"])
        w.writeheader()
        w.writerows(rows)
    results = [analyze(p) for p in (jsonl, tmp_path / "a.json", tmp_path / "cols.json", tmp_path / "a.csv")]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    results.append(analyze(tmp_path / "a.parquet"))
    assert {(r.examples, r.tokens, r.data_format.key) for r in results} == {(7, results[0].tokens, "prompt_completion")}
    assert {r.file_format for r in results} == {"jsonl", "json", "csv", "parquet"}


def test_csv_cells_holding_json_messages_are_parsed(tmp_path):
    with open(tmp_path / "c.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["messages"])
        w.writerow([json.dumps(chat(1)["messages"])])
    assert analyze(tmp_path / "c.csv").data_format.key == "messages"


def test_bad_json_lines_are_all_reported_with_line_numbers(tmp_path):
    records = [chat(i) for i in range(30)]
    for i in (3, 9, 12, 15, 20, 25, 28):
        records[i] = "{not json"
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(DataError) as exc:
        analyze(path)
    msg = str(exc.value)
    assert str(path) in msg and "7 lines cannot be parsed" in msg
    assert "lines 4, 10, 13, 16, 21 and 2 more" in msg  # first SHOW_LOCATIONS, then a count
    assert SHOW_LOCATIONS == 5


def test_mixed_missing_and_unknown_are_errors_naming_lines(tmp_path):
    path = write_jsonl(tmp_path / "mix.jsonl", [
        {"prompt": "a", "chosen": "b", "rejected": "c"},
        {"prompt": "a", "chosen": "b", "rejected": "c"},
        {"prompt": "a", "chosen": "b"},
        {"text": "raw"},
        {"foo": 1},
    ])
    with pytest.raises(DataError) as exc:
        analyze(path)
    msg = str(exc.value)
    assert "misses a required field (line 3" in msg and "'rejected'" in msg
    assert "another format" in msg and "line 4" in msg
    assert "matches no known format (line 5" in msg


def test_unknown_format_names_first_line_and_fields(tmp_path):
    path = write_jsonl(tmp_path / "u.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError, match=r"line 1 has fields \['answer', 'question'\]"):
        analyze(path)


def test_warnings_duplicates_empty_turns_and_truncation(tmp_path):
    long = chat(99, "token " * 400)
    path = write_jsonl(tmp_path / "w.jsonl", [chat(1), chat(1), chat(2, ""), long])
    s = analyze(path, seq_len=64, max_context=128)
    assert s.examples == 4  # warnings never drop examples
    assert s.warnings["duplicate"].locations == [2]
    assert s.warnings["empty_turn"].locations == [3]
    assert s.warnings["truncated"].locations == [4] and s.warnings["over_context"].count == 1
    assert s.tokens_kept < s.tokens and s.lengths["max"] > 64
    assert any("longer than --seq-len" in w for w in s.warning_lines())


def test_padding_efficiency_follows_micro_batches(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": "x " * n} for n in (10, 400, 10, 400)])
    one = analyze(path, micro_batch_size=1)
    two = analyze(path, micro_batch_size=2)
    assert one.padded_tokens == one.tokens_kept and one.padding_efficiency == 1.0
    assert two.padded_tokens > two.tokens_kept and two.padding_efficiency < 0.75
    assert two.tokens_per_epoch(packing=True) == two.tokens_kept
    assert list(two.padded_by_batch.values()) == sorted(two.padded_by_batch.values())  # bigger batches pad more


def test_padding_is_the_expectation_over_random_micro_batches():
    """The Trainer's sampler shuffles: a micro-batch of b sequences pads to the longest of b random draws.

    Checked against brute force: every ordered tuple of b draws (with replacement) from the lengths.
    """
    import itertools

    from ftplan.sizing.dataset import _padded

    lengths = sorted([3, 5, 5, 9, 20, 41, 41, 60, 75])
    for b in (1, 2, 3):
        tuples = list(itertools.product(lengths, repeat=b))
        exact = len(lengths) * sum(min(max(t), 64) for t in tuples) / len(tuples)
        assert _padded(lengths, b, 64) == round(exact)


def test_exact_counts_with_a_real_tokenizer_and_chat_template(tmp_path):
    from tokenizers import Tokenizer

    tok_path = build_tokenizer(tmp_path / "tok")
    path = write_jsonl(tmp_path / "d.jsonl", [chat(i, "the quick brown fox") for i in range(5)])
    s = analyze(path, tokenizer_json=tok_path)
    assert s.exact and s.uncertainty == 0
    rendered = "<|im_start|>user\nquestion 0<|im_end|>\n<|im_start|>assistant\nthe quick brown fox<|im_end|>\n"
    expected = len(Tokenizer.from_file(str(tok_path)).encode(rendered, add_special_tokens=False).ids)
    assert s.lengths["max"] == expected


def test_template_that_rejects_a_record_names_it(tmp_path):
    strict = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
              "{% endif %}{{ m['content'] }}{% endfor %}")
    tok_path = build_tokenizer(tmp_path / "tok", template=strict)
    bad = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                        {"role": "assistant", "content": "a"}]}
    path = write_jsonl(tmp_path / "d.jsonl", [chat(1), bad, chat(2)])
    with pytest.raises(DataError, match=r"rejected by the model's chat template \(line 2; first: no system role"):
        analyze(path, tokenizer_json=tok_path)


def test_unsupported_suffix_and_missing_file(tmp_path):
    (tmp_path / "d.txt").write_text("hello")
    with pytest.raises(DataError, match=r"\.jsonl, \.json, \.csv and \.parquet"):
        analyze(tmp_path / "d.txt")
    with pytest.raises(DataError, match="no such file"):
        analyze(tmp_path / "nope.jsonl")


def test_empty_file(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no examples"):
        analyze(tmp_path / "e.jsonl")


def test_streams_a_large_file(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as fh:
        for i in range(60_000):
            fh.write(json.dumps({"prompt": f"q{i}", "completion": "a" * (i % 50)}) + "\n")
    s = analyze(path)
    assert s.examples == 60_000 and s.warnings["duplicate"].count == 0


@pytest.mark.train
def test_hub_id_offline_is_a_clear_error(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="Hugging Face Hub dataset id it cannot be read now"):
        analyze("nobody-here/no-such-dataset-ftplan")
