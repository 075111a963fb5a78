"""The eval gate: the same frozen golden set for every adapter; a regression in any category blocks it.

Base model and adapter answer every golden prompt (batched, greedy, same settings), both are scored
with the same checks, and pass rates are compared per category. The gate fails when the adapter
passes fewer items than the base in any category (beyond `eval.thresholds.max_regression`,
default 0), or falls under a category's minimum in `eval.thresholds`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from .checks import make_judge, run_check
from .golden import GoldenItem, file_sha256, load_golden


@dataclass
class GateResult:
    passed: bool
    golden: str
    golden_sha256: str
    categories: dict[str, dict]
    reasons: list[str]
    items: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _prompts(tok, items: list[GoldenItem]) -> list[str]:
    out = []
    for it in items:
        msgs = it.messages or [{"role": "user", "content": it.prompt}]
        if getattr(tok, "chat_template", None):
            out.append(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
        else:
            out.append(it.prompt or "\n".join(m["content"] for m in msgs))
    return out


def generate(model, tok, prompts: list[str], batch: int = 8, max_new_tokens: int = 64) -> list[str]:
    import torch

    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    answers: list[str] = []
    for i in range(0, len(prompts), batch):
        enc = tok(prompts[i:i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        answers += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return answers


def score(items: list[GoldenItem], outputs: list[str], judge=None) -> list[bool]:
    return [all(run_check(c, out, it, judge) for c in it.checks) for it, out in zip(items, outputs, strict=True)]


def decide(items: list[GoldenItem], base_ok: list[bool], adapter_ok: list[bool], thresholds: dict) -> tuple[dict, list]:
    cats: dict[str, dict] = {}
    for it, b, a in zip(items, base_ok, adapter_ok, strict=True):
        c = cats.setdefault(it.category, {"n": 0, "base_pass": 0, "adapter_pass": 0})
        c["n"] += 1
        c["base_pass"] += b
        c["adapter_pass"] += a
    reasons = []
    allowed = float(thresholds.get("max_regression", 0.0))
    for name, c in sorted(cats.items()):
        c["base"] = c["base_pass"] / c["n"]
        c["adapter"] = c["adapter_pass"] / c["n"]
        c["change"] = c["adapter"] - c["base"]
        if c["change"] < -allowed - 1e-12:
            reasons.append(f"{name} regresses: {c['base']:.0%} -> {c['adapter']:.0%} of {c['n']}")
        floor = thresholds.get(name)
        if floor is not None and c["adapter"] < float(floor):
            reasons.append(f"{name} {c['adapter']:.0%} is under its threshold {float(floor):.0%}")
    return cats, reasons


def load_pair(base_id: str, adapter_dir: Path):
    """(tokenizer, base model, tuned model): PEFT adapter on the base, or a fully fine-tuned folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_id
    tok = AutoTokenizer.from_pretrained(str(tok_src))
    base = AutoModelForCausalLM.from_pretrained(base_id)
    if (adapter_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_id), str(adapter_dir))
    else:
        tuned = AutoModelForCausalLM.from_pretrained(str(adapter_dir))
    return tok, base, tuned


def chat_generate(client, model: str, items: list[GoldenItem], max_new_tokens: int = 64) -> list[str]:
    """Answers from an OpenAI-compatible POST /chat/completions (greedy), for models that live at a provider."""
    out = []
    for it in items:
        msgs = it.messages or [{"role": "user", "content": it.prompt}]
        body = client.json("POST", "/chat/completions", json={"model": model, "messages": msgs, "temperature": 0,
                                                              "max_completion_tokens": max_new_tokens})
        out.append((body.get("choices") or [{}])[0].get("message", {}).get("content") or "")
    return out


def _result(golden, items, base_out, tuned_out, thresholds, judge) -> GateResult:
    base_ok, tuned_ok = score(items, base_out, judge), score(items, tuned_out, judge)
    cats, reasons = decide(items, base_ok, tuned_ok, thresholds or {})
    detail = [{"line": it.line, "category": it.category, "base": b, "adapter": a, "adapter_output": o[:300]}
              for it, b, a, o in zip(items, base_ok, tuned_ok, tuned_out, strict=True)]
    return GateResult(not reasons, str(golden), file_sha256(golden), cats, reasons, detail)


def evaluate_remote(client, base_model: str, tuned_model: str, golden: str | Path, *, thresholds: dict | None = None,
                    expected_sha256: str | None = None, judge_cfg: dict | None = None,
                    max_new_tokens: int = 64) -> GateResult:
    """The gate for a model kept by its provider: base and fine-tuned model answer through the provider's API."""
    items = load_golden(golden, expected_sha256)
    try:
        base_out = chat_generate(client, base_model, items, max_new_tokens)
        tuned_out = chat_generate(client, tuned_model, items, max_new_tokens)
    finally:
        client.close()
    return _result(golden, items, base_out, tuned_out, thresholds, make_judge(judge_cfg))


def evaluate(base_id: str, adapter_dir: str | Path, golden: str | Path, *, thresholds: dict | None = None,
             expected_sha256: str | None = None, judge_cfg: dict | None = None, batch: int = 8,
             max_new_tokens: int = 64) -> GateResult:
    items = load_golden(golden, expected_sha256)  # refuses a tampered set before any generation
    tok, base, tuned = load_pair(base_id, Path(adapter_dir))
    prompts = _prompts(tok, items)
    judge = make_judge(judge_cfg)
    base_out = generate(base, tok, prompts, batch, max_new_tokens)
    tuned_out = generate(tuned, tok, prompts, batch, max_new_tokens)
    return _result(golden, items, base_out, tuned_out, thresholds, judge)
