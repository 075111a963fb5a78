"""Distillation's optional first stage: the teacher writes the completions the student is trained on.

With `method.generate_with_teacher: true` every prompt of the data set (the conversation up to its
last assistant turn, or the `prompt` column) goes through the teacher with greedy decoding, and
its answer replaces the data's. Training is then ordinary SFT on those outputs.
"""

from __future__ import annotations

from .schema import Recipe

BATCH = 8


def _prompt_messages(row: dict) -> list[dict] | None:
    msgs = row.get("messages")
    if not msgs:
        return None
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=len(msgs))
    return msgs[:last]


def generate_with_teacher(recipe: Recipe, ds, fmt_key: str, emit=None):
    import torch
    from transformers import AutoModelForCausalLM

    from .backend import load_tokenizer

    teacher_id = recipe.method.teacher
    tok, _ = load_tokenizer(teacher_id)
    tok.padding_side = "left"  # decoder-only generation pads on the left
    model = AutoModelForCausalLM.from_pretrained(teacher_id)
    model.eval()
    rows = list(ds)
    prompts = []
    for row in rows:
        if fmt_key == "messages":
            prompts.append(tok.apply_chat_template(_prompt_messages(row), tokenize=False, add_generation_prompt=True))
        else:
            p = row["prompt"]
            prompts.append(tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                           if isinstance(p, list) else p)
    answers: list[str] = []
    for i in range(0, len(prompts), BATCH):
        enc = tok(prompts[i:i + BATCH], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=recipe.method.max_completion_length, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        answers += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        if emit:
            emit("log", level="info", message=f"teacher {teacher_id}: {min(i + BATCH, len(prompts))}/{len(prompts)} "
                 "completions written")

    def replace(row, idx):
        if fmt_key == "messages":
            return {"messages": _prompt_messages(row) + [{"role": "assistant", "content": answers[idx]}]}
        c = row["completion"]
        return {"completion": [{"role": "assistant", "content": answers[idx]}] if isinstance(c, list) else answers[idx]}

    return ds.map(replace, with_indices=True)
