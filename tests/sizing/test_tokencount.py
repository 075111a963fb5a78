import pytest
from tokenizer_fixture import build_tokenizer

from ftplan.sizing.tokencount import CharCounter, TokenizerCounter, find_tokenizer, hub_cache_tokenizer, ratios


def test_ratios_are_measured_data_with_a_source():
    data = ratios()
    assert data["source"] and data["as_of"] and len(data["families"]) >= 5
    for fam in data["families"].values():
        assert fam["prose"]["p10"] <= fam["prose"]["median"] <= fam["prose"]["p90"]


@pytest.mark.parametrize("vocab,family", [(32000, "llama2"), (128256, "llama3"), (151936, "qwen2_5"),
                                          (256000, "gemma"), (50257, "gpt2")])
def test_char_counter_picks_the_family_nearest_the_vocabulary(vocab, family):
    c = CharCounter(vocab)
    assert c.family in (family, "qwen3", "gemma3")
    assert c.ratio == ratios()["families"][c.family]["prose"]["median"]


def test_char_counter_far_from_every_family_uses_the_median():
    c = CharCounter(7_000)
    assert c.family is None and 2.5 < c.ratio < 4.5 and c.uncertainty > 0


def test_char_counter_adds_chat_markup():
    c = CharCounter(128256)
    text = "x" * 400
    plain, chat = c.count([text, [{"role": "user", "content": text}]])
    assert chat > plain


def test_tokenizer_counter_without_template_falls_back_to_chatml(tmp_path):
    counter = TokenizerCounter(build_tokenizer(tmp_path, template=None))
    assert "ChatML" in counter.template_note
    assert counter.count([[{"role": "user", "content": "what is two plus two"}]])[0] > 5


def test_find_tokenizer_prefers_flag_then_model_folder_then_hub_cache(tmp_path, monkeypatch):
    model = tmp_path / "model"
    build_tokenizer(model)
    assert find_tokenizer(str(model), "x/y", None) == model / "tokenizer.json"
    other = tmp_path / "other"
    build_tokenizer(other)
    assert find_tokenizer(str(model), "x/y", str(other)) == other / "tokenizer.json"
    snap = tmp_path / "hub" / "models--org--m" / "snapshots" / "abc"
    build_tokenizer(snap)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hub_cache_tokenizer("org/m") == snap / "tokenizer.json"
    assert find_tokenizer("org/m", "org/m", None) == snap / "tokenizer.json"


def test_sampled_counter_matches_a_full_count_within_its_stated_uncertainty(tmp_path):
    from ftplan.sizing.tokencount import SampledCounter

    tok = build_tokenizer(tmp_path)
    seqs = [[{"role": "user", "content": "what is two plus two " * (1 + i % 5)},
             {"role": "assistant", "content": "the quick brown fox " * (1 + (i * 7) % 11)}] for i in range(6000)]
    full = TokenizerCounter(tok).count(seqs)
    sampled = SampledCounter(TokenizerCounter(tok), exact_first=1000, every=10)
    got = []
    for i in range(0, len(seqs), 500):
        got += sampled.count(seqs[i:i + 500])
    assert not sampled.exact and 4000 < sampled.estimated < 5000
    assert got[:1000] == full[:1000]  # the head is exact
    err = abs(sum(got) - sum(full)) / sum(full)
    assert err <= max(3 * sampled.uncertainty, 0.002)
    assert sampled.uncertainty < 0.05


def test_sampled_counter_with_count_all_is_exact(tmp_path):
    from ftplan.sizing.tokencount import SampledCounter

    tok = build_tokenizer(tmp_path)
    seqs = ["the quick brown fox"] * 300
    c = SampledCounter(TokenizerCounter(tok), exact_first=None)
    assert c.count(seqs) == TokenizerCounter(tok).count(seqs) and c.exact and c.uncertainty == 0


def test_a_very_long_text_is_counted_on_its_head_scaled_and_marked_approximate(tmp_path):
    """One 50 MB line once took 100 s and 10 GB; past LONG_TEXT_CHARS the head is tokenized and scaled.
    The reference is the same tokenizer on the whole text."""
    from tokenizers import Tokenizer

    from ftplan.sizing.tokencount import LONG_TEXT_CHARS, TokenizerCounter

    path = build_tokenizer(tmp_path / "tok")
    text = ("the quick brown fox jumps over the lazy dog what is two plus two " * 20_000)[:1_000_000]
    counter = TokenizerCounter(path)
    [n] = counter.count([text])
    whole = len(Tokenizer.from_file(str(path)).encode(text).ids)
    assert len(text) > LONG_TEXT_CHARS and counter.long_texts == 1
    assert abs(n - whole) / whole < 0.01
    assert counter.exact is False and 0 < counter.uncertainty <= 0.05
    short = TokenizerCounter(path)
    short.count(["the quick brown fox"])
    assert short.exact is True and short.uncertainty == 0.0
