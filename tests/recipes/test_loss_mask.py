"""The tokens that carry the loss in the trainer's batches are exactly the assistant tokens (or the completion).

Chat templates: the published Llama 3, Llama 3.1, Qwen 2.5 (ChatML), Gemma and Phi-3 templates as
TRL ships them for identity comparison (trl/chat_templates/*.jinja, none with generation markers),
and TRL's Qwen 2.5 training template (with `{% generation %}` markers). The reference mask is
computed independently of ftplan's code, the way the issue defines it: render each prefix of the
conversation with transformers' `apply_chat_template`, tokenize, and diff the token ids. The
batches come from ftplan's real trainer set-up (`build_trainer` -> TRL's SFTTrainer dataloader).
"""

from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.train]
trl = pytest.importorskip("trl")
TEMPLATES = Path(trl.__file__).parent / "chat_templates"
SPECIALS = ["<unk>", "<pad>", "<s>", "</s>", "<bos>", "<eos>", "<|begin_of_text|>", "<|end_of_text|>",
            "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>",
            "<|endoftext|>", "<start_of_turn>", "<end_of_turn>", "<|user|>", "<|assistant|>", "<|system|>",
            "<|end|>", "<tool_call>", "</tool_call>"]
# (template file, bos, eos, whether it takes a system message)
CASES = {"llama3": ("llama3.jinja", "<|begin_of_text|>", "<|eot_id|>", True),
         "llama3_1": ("llama3_1.jinja", "<|begin_of_text|>", "<|eot_id|>", True),
         "qwen2_5": ("qwen2_5.jinja", None, "<|im_end|>", True),
         "gemma": ("gemma.jinja", "<bos>", "<eos>", False),
         "phi3": ("phi3.jinja", "<s>", "<|endoftext|>", True),
         "qwen2_5_training (markers)": ("qwen2_5_training.jinja", None, "<|im_end|>", True)}
CONVERSATIONS = [
    [{"role": "user", "content": "what is two plus two?"}, {"role": "assistant", "content": "four."}],
    [{"role": "system", "content": "answer briefly."}, {"role": "user", "content": "capital of france?"},
     {"role": "assistant", "content": "paris."}, {"role": "user", "content": "and of italy?  "},
     {"role": "assistant", "content": "rome, the capital.\nit is old."}],
    [{"role": "user", "content": "say hi"}, {"role": "assistant", "content": "hi there"},
     {"role": "user", "content": "again"}, {"role": "assistant", "content": "hello again — ünïcode"}],
]


# Llama 3's tokenizer.json pre-tokenizer: Split on this regex, then ByteLevel without its own regex. Newline runs
# are their own tokens whatever follows, as in the real Llama 3 / Qwen 2.5 / Gemma tokenizers.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")


def tokenizer_for(template: str, bos, eos):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    corpus = [m["content"] for c in CONVERSATIONS for m in c] * 20 + ["user assistant system model\n\n"] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token=bos,
                                   eos_token=eos)
    fast.chat_template = template
    return fast


def ids(out) -> list[int]:
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def reference_labels(tok, messages) -> list[int]:
    """Token-id prefix diff: each assistant turn's tokens after the generation prompt that the full sequence keeps."""
    full = ids(tok.apply_chat_template(messages, tokenize=True))
    keep = [False] * len(full)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = ids(tok.apply_chat_template(messages[:i], tokenize=True, add_generation_prompt=True))
        turn = ids(tok.apply_chat_template(messages[: i + 1], tokenize=True))
        assert turn[: len(prompt)] == prompt == full[: len(prompt)]
        j = len(prompt)
        while j < len(turn) and j < len(full) and turn[j] == full[j]:
            keep[j] = True
            j += 1
    return [t if k else -100 for t, k in zip(full, keep, strict=True)]


def trainer_batches(tmp_path, tok, rows: list[dict], **method):
    """Labels of every batch ftplan's trainer set-up feeds the model, keyed by the batch's input ids."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ftplan.recipes.data import load_training_data
    from ftplan.recipes.loss_mask import choose
    from ftplan.recipes.schema import parse_recipe
    from ftplan.recipes.train import _row_preparer
    from ftplan.recipes.trainers import build_trainer
    from ftplan.sizing.dataformat import detect

    data = tmp_path / "d.jsonl"
    import json

    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = parse_recipe({"model": "m", "data": {"path": str(data)}, "method": {"objective": "sft", **method},
                           "hyperparameters": {"max_steps": 1, "batch_size": 1, "max_seq_length": 512,
                                               "precision": "fp32", "gradient_accumulation": 1}})
    fmt = detect(rows[0])
    mask = choose(recipe, fmt.key, tok.chat_template)
    train_ds, _ = load_training_data(recipe, fmt, prepare=_row_preparer(recipe, fmt.key, tok, mask))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id))
    trainer = build_trainer(recipe, model, tok, None, train_ds, None, str(tmp_path / "ck"), False, [], mask=mask)
    out = {}
    for batch in trainer.get_train_dataloader():
        for row_ids, row_labels, att in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
            n = int(att.sum())
            out[tuple(row_ids[:n].tolist())] = row_labels[:n].tolist()
    return mask, out


@pytest.mark.parametrize("case", sorted(CASES))
def test_assistant_tokens_and_only_they_carry_the_loss(tmp_path, case):
    file, bos, eos, system_ok = CASES[case]
    tok = tokenizer_for((TEMPLATES / file).read_text(), bos, eos)
    convs = [c if system_ok else [m for m in c if m["role"] != "system"] for c in CONVERSATIONS]
    mask, batches = trainer_batches(tmp_path, tok, [{"messages": c} for c in convs])
    assert mask.mode == ("assistant_markers" if "markers" in case else "assistant_rendered")
    for conv in convs:
        expected = reference_labels(tok, conv)
        got = batches[tuple(ids(tok.apply_chat_template(conv, tokenize=True)))]
        if mask.mode == "assistant_markers":
            # The template's own markers (TRL's training template puts the newline after "assistant" inside them):
            # every reference token carries the loss, and the only others are whitespace the markers include.
            extra = [t for t, e in zip(got, expected, strict=True) if t != -100 and e == -100]
            assert all(x == y for x, y in zip(got, expected, strict=True) if y != -100)
            assert all(not tok.decode([t]).strip() for t in extra)
        else:
            assert got == expected
        assert any(t != -100 for t in got) and any(t == -100 for t in got)


def test_prompt_completion_puts_the_loss_on_the_completion_only(tmp_path):
    tok = tokenizer_for((TEMPLATES / "qwen2_5.jinja").read_text(), None, "<|im_end|>")
    rows = [{"prompt": "what is two plus two? ", "completion": "four."},
            {"prompt": "capital of france? ", "completion": "paris, of course."}]
    mask, batches = trainer_batches(tmp_path, tok, rows)
    assert mask.mode == "completion"
    for r in rows:
        prompt = tok(r["prompt"], add_special_tokens=False)["input_ids"]
        [(full, labels)] = [(k, v) for k, v in batches.items() if list(k[: len(prompt)]) == prompt]
        assert labels[: len(prompt)] == [-100] * len(prompt)
        assert all(t == f for t, f in zip(labels[len(prompt):], full[len(prompt):], strict=True) if t != -100)
        assert sum(t != -100 for t in labels) >= len(full) - len(prompt) - 1  # every completion token (EOS aside)


def test_train_on_inputs_puts_the_loss_on_every_token(tmp_path):
    tok = tokenizer_for((TEMPLATES / "qwen2_5.jinja").read_text(), None, "<|im_end|>")
    mask, batches = trainer_batches(tmp_path, tok, [{"messages": c} for c in CONVERSATIONS], train_on_inputs=True)
    assert mask.mode == "all"
    for full, labels in batches.items():
        assert labels == list(full)


def test_the_manifest_records_how_many_tokens_carried_the_loss(tmp_path, write_recipe):
    import json

    from training_helpers import train

    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CONVERSATIONS * 4))
    assert train(write_recipe(name="masked", data=data)) == 0
    actuals = json.loads((tmp_path / "out-masked" / "manifest.json").read_text())["actuals"]
    assert actuals["loss_mask"] == "assistant_rendered"
    assert 0 < actuals["loss_tokens"] < actuals["batch_tokens"]
