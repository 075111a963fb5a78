"""Which of TRL's dataset formats a record is in, whether it is well-formed, and its text.

The formats are TRL's (docs "Dataset formats and types"): language modeling (`text` or
conversational `messages`), prompt-completion, preference with explicit or implicit prompt,
unpaired preference (KTO's `label`), and prompt-only (GRPO). OpenAI/Together's preference layout
(`input` / `preferred_output` / `non_preferred_output`) is read as preference too. A file has
one format; `check()` says, per record, what is wrong with it in words a user can act on.
"""

from __future__ import annotations

from dataclasses import dataclass

# A sequence the trainer forwards: plain text, or a list of chat messages to render.
Sequence = str | list[dict]


@dataclass(frozen=True)
class DataFormat:
    key: str
    required: tuple[str, ...]
    description: str
    objectives: tuple[str, ...]  # objectives (method.py) that train on this format


FORMATS: tuple[DataFormat, ...] = (  # most specific first: detection takes the first match
    DataFormat("openai_preference", ("input", "preferred_output", "non_preferred_output"),
               "preference pairs, OpenAI/Together layout (input, preferred_output, non_preferred_output)",
               ("dpo", "simpo", "orpo")),
    DataFormat("preference", ("prompt", "chosen", "rejected"), "preference pairs (prompt, chosen, rejected)",
               ("dpo", "simpo", "orpo")),
    DataFormat("preference_implicit", ("chosen", "rejected"),
               "preference pairs with the prompt inside chosen/rejected (implicit prompt)", ("dpo", "simpo", "orpo")),
    DataFormat("unpaired_preference", ("prompt", "completion", "label"),
               "unpaired preference (prompt, completion, label true/false)", ("kto",)),
    DataFormat("prompt_completion", ("prompt", "completion"), "prompt-completion pairs",
               ("sft", "distillation")),
    DataFormat("messages", ("messages",), "conversations (messages with role/content)", ("sft", "distillation")),
    DataFormat("text", ("text",), "raw text (language modeling)", ("continued-pretraining", "sft")),
    DataFormat("prompt_only", ("prompt",), "prompts only (for online RL such as GRPO)", ("grpo",)),
)
BY_KEY = {f.key: f for f in FORMATS}
PREFERENCE = ("openai_preference", "preference", "preference_implicit")


def _present(record: dict) -> set[str]:
    return {k for k, v in record.items() if v is not None}


def detect(record: dict) -> DataFormat | None:
    keys = _present(record)
    for fmt in FORMATS:
        if set(fmt.required) <= keys:
            return fmt
    return None


# Roles chat templates and TRL know (OpenAI's developer/function, Llama 3.1's ipython for tool output).
ROLES = ("system", "developer", "user", "assistant", "tool", "function", "ipython")
# What other tools call them, and the role meant.
ROLE_SYNONYMS = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant", "ai": "assistant",
                 "prompter": "user", "observation": "tool"}
WARNING_KINDS = ("empty_turn", "assistant_first")


@dataclass(frozen=True)
class Finding:
    # error kinds: missing_field, mixed_format, unknown_format, bad_value, bad_role, no_assistant;
    # warnings: empty_turn, assistant_first
    kind: str
    detail: str

    @property
    def is_error(self) -> bool:
        return self.kind not in WARNING_KINDS


def _content_text(content) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal parts: count the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return None


def _check_messages(value, field: str, *, conversation: bool = False) -> list[Finding]:
    """A list of {role, content} messages; a whole `conversation` (SFT) also needs an assistant turn."""
    if not isinstance(value, list) or not value:
        return [Finding("bad_value", f"'{field}' must be a non-empty list of {{role, content}} messages")]
    found: list[Finding] = []
    roles = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict) or "role" not in msg:
            return [Finding("bad_value", f"'{field}[{i}]' is not a message with a 'role'")]
        role = msg["role"]
        if not isinstance(role, str) or role not in ROLES:
            meant = ROLE_SYNONYMS.get(str(role).lower()) if isinstance(role, str) else None
            hint = f" (rename it to '{meant}')" if meant else ""
            return [Finding("bad_role", f"'{field}[{i}].role' is {role!r}; chat roles are "
                                        f"{', '.join(ROLES[:5])}{hint}")]
        roles.append(role)
        text = _content_text(msg.get("content"))
        if text is None and not msg.get("tool_calls"):
            return [Finding("bad_value", f"'{field}[{i}].content' is missing or not text")]
        if role == "assistant" and not (text or "").strip() and not msg.get("tool_calls"):
            found.append(Finding("empty_turn", f"'{field}[{i}]' is an empty assistant turn"))
    if conversation:
        if "assistant" not in roles:
            return [Finding("no_assistant", f"'{field}' has no assistant turn: nothing for the loss to fall on")]
        first = next((r for r in roles if r not in ("system", "developer")), None)
        if first == "assistant":
            found.append(Finding("assistant_first", f"'{field}' opens with an assistant turn; chat templates "
                                                    "expect the user first"))
    return found


def _check_text_or_messages(value, field: str) -> list[Finding]:
    if isinstance(value, str):
        return [] if value.strip() else [Finding("empty_turn", f"'{field}' is empty")]
    if isinstance(value, list):
        return _check_messages(value, field)
    if isinstance(value, dict) and field == "input" and "messages" in value:
        return _check_messages(value["messages"], "input.messages")
    return [Finding("bad_value", f"'{field}' must be text or a list of messages, not {type(value).__name__}")]


def check(record: dict, fmt: DataFormat) -> list[Finding]:
    """Problems of one record in a file whose format is `fmt` (empty list: fine)."""
    keys = _present(record)
    missing = [k for k in fmt.required if k not in keys]
    if missing:
        own = detect(record)
        if own is not None and own.key != fmt.key and not set(own.required) <= set(fmt.required):
            return [Finding("mixed_format", f"is {own.description}, but the file is {fmt.description}")]
        if keys & set(fmt.required):
            return [Finding("missing_field", f"missing or empty field(s) {', '.join(repr(m) for m in missing)}")]
        return [Finding("unknown_format", f"has fields {sorted(record)} that match no known format")]
    for richer in FORMATS:  # half of a richer format: {"prompt", "chosen"} is a pair missing "rejected", not a prompt
        extra = set(richer.required) - set(fmt.required)
        if set(fmt.required) < set(richer.required) and extra & keys and not extra <= keys:
            have, lack = sorted(extra & keys), sorted(extra - keys)
            return [Finding("missing_field", f"has {', '.join(repr(k) for k in have)} but no "
                            f"{', '.join(repr(k) for k in lack)}: {richer.description} need "
                            f"{', '.join(richer.required)}")]
    found: list[Finding] = []
    for field in fmt.required:
        if field == "label":
            if not isinstance(record["label"], bool) and record["label"] not in (0, 1):
                found.append(Finding("bad_value", f"'label' must be true or false, not {record['label']!r}"))
        elif field == "messages":
            found += _check_messages(record["messages"], "messages", conversation=True)
        else:
            found += _check_text_or_messages(record[field], field)
    return found


def as_messages(value, role: str) -> list[dict]:
    """Text, a message list, or {"messages": [...]} (OpenAI's `input`) -> a message list."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and "messages" in value:
        return value["messages"]
    return [{"role": role, "content": value}]


def _join(prompt, completion) -> Sequence:
    """One sequence from a prompt and a completion: chat messages when either is conversational."""
    if isinstance(prompt, str) and isinstance(completion, str):
        return prompt + completion
    return as_messages(prompt, "user") + as_messages(completion, "assistant")


def sequences(record: dict, fmt: DataFormat) -> list[Sequence]:
    """What the trainer forwards for this record: one sequence, or two for a preference pair.

    For prompt-only data this is the prompt: the completions are generated during training.
    """
    r = record
    if fmt.key == "messages":
        return [r["messages"]]
    if fmt.key == "text":
        return [r["text"]]
    if fmt.key == "prompt_only":
        return [r["prompt"] if isinstance(r["prompt"], str) else as_messages(r["prompt"], "user")]
    if fmt.key in ("prompt_completion", "unpaired_preference"):
        return [_join(r["prompt"], r["completion"])]
    if fmt.key == "preference":
        return [_join(r["prompt"], r["chosen"]), _join(r["prompt"], r["rejected"])]
    if fmt.key == "preference_implicit":
        return [r["chosen"], r["rejected"]]
    prompt = r["input"]
    return [_join(prompt, r["preferred_output"]), _join(prompt, r["non_preferred_output"])]
