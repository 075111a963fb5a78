"""Where the loss falls: one meaning of `method.train_on_inputs` on every provider.

`train_on_inputs: false` (the default, as Axolotl and LLaMA-Factory mask the prompt) puts the
loss on what the model must learn to write: the completion of prompt-completion data, the
assistant turns of a conversation. How ftplan's program does it:

- prompt-completion: TRL's own `completion_only_loss`;
- conversations whose chat template marks assistant output with `{% generation %}`: the span
  transformers' `return_assistant_tokens_mask` reports for those markers (TRL's
  `assistant_only_loss` uses the same);
- any other chat template: the assistant tokens are found from the template's own rendering,
  as the characters each assistant turn adds after the generation prompt of the conversation so
  far (render each prefix, take the difference), then the tokens inside those characters.

Conversations are tokenized here, from ftplan's own reading of the file (never through Arrow's
schema, which turns a missing `tool_calls` into a present `None`), and reach TRL as `input_ids`
with `labels` (-100 where no loss falls), a form TRL's SFTTrainer takes as is.
"""

from __future__ import annotations

from dataclasses import dataclass

from .schema import Recipe

SFT_LIKE = ("sft", "distillation", "continued-pretraining")


@dataclass(frozen=True)
class LossMask:
    mode: str  # all | completion | assistant_markers | assistant_rendered | objective
    reason: str


def choose(recipe: Recipe, fmt_key: str, chat_template: str | None) -> LossMask:
    from ftplan.sizing.chattemplate import has_generation_markers

    obj = recipe.method.objective
    if obj not in SFT_LIKE:
        return LossMask("objective", f"{obj}: the loss falls where the objective puts it (TRL's {obj} trainer)")
    if obj == "continued-pretraining" or fmt_key == "text":
        return LossMask("all", "raw text: every token carries the loss")
    if recipe.method.train_on_inputs:
        return LossMask("all", "method.train_on_inputs: every token carries the loss, prompts included")
    if fmt_key == "prompt_completion":
        return LossMask("completion", "loss on the completions only (TRL's completion_only_loss)")
    if chat_template and has_generation_markers(chat_template):
        return LossMask("assistant_markers", "loss on assistant turns, as the chat template's {% generation %} "
                        "markers delimit them")
    return LossMask("assistant_rendered", "loss on assistant turns, found by rendering each prefix of the "
                    "conversation with the model's own chat template")


class NotPrefixPreserving(ValueError):
    """The template renders earlier turns differently once later turns follow (e.g. it drops reasoning)."""


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def assistant_spans(render, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """(the rendered conversation, character spans each assistant turn adds after its generation prompt).

    `render(messages, add_generation_prompt)` is the tokenizer's own template. A turn's span ends where
    rendering up to that turn stops agreeing with the whole conversation (a template may close the last
    turn differently, e.g. Phi-3 appends EOS only at the very end).
    """
    full = render(messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m.get("role") != "assistant" or i == 0:
            continue
        before = render(messages[:i], True)
        upto = render(messages[: i + 1], False)
        if not full.startswith(before) or not upto.startswith(before):
            raise NotPrefixPreserving(f"turn {i + 1}: the text before it renders differently once it is added")
        end = len(before) + _common_prefix(upto[len(before):], full[len(before):])
        if end > len(before):
            spans.append((len(before), end))
    return full, spans


def tokenize_conversation(tokenizer, messages: list[dict], mask: LossMask, max_length: int) -> dict:
    """input_ids and labels (-100 where no loss falls) for one conversation, truncated to max_length."""
    if mask.mode == "assistant_markers":
        out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        ids = list(out["input_ids"])[:max_length]
        flags = list(out["assistant_masks"])[:max_length]
        return {"input_ids": ids, "labels": [t if f else -100 for t, f in zip(ids, flags, strict=True)]}

    def render(msgs, gen):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    if mask.mode == "all":
        text, spans = render(messages, False), None
    else:
        text, spans = assistant_spans(render, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"])[:max_length], list(enc["offset_mapping"])[:max_length]
    if spans is None:
        return {"input_ids": ids, "labels": list(ids)}
    labels = [t if b > a and any(s <= a and b <= e for s, e in spans) else -100
              for t, (a, b) in zip(ids, offsets, strict=True)]
    return {"input_ids": ids, "labels": labels}


class CountingCollator:
    """Wraps the trainer's collator to count the tokens that carried the loss in every batch it made."""

    def __init__(self, inner):
        self.inner = inner
        self.loss_tokens = 0
        self.tokens = 0

    def __call__(self, examples):
        batch = self.inner(examples)
        labels = batch.get("labels") if hasattr(batch, "get") else None
        if labels is not None:
            self.loss_tokens += int((labels != -100).sum())
        mask = batch.get("attention_mask") if hasattr(batch, "get") else None
        if mask is not None:
            self.tokens += int(mask.sum())
        elif labels is not None:
            self.tokens += int(labels.numel())
        return batch

    def __getattr__(self, name):
        return getattr(self.inner, name)
