"""Count tokens: exactly with the model's own `tokenizer.json`, else from characters.

The exact path uses the Rust `tokenizers` library and renders chat data with the model's own
chat template (Jinja, as transformers does, without importing transformers). The fallback divides
characters by a ratio measured with real tokenizers (`data/chars_per_token.json`, written by
`bench/chars_per_token.py`), picking the tokenizer family whose vocabulary size is nearest the
model's, and carries the measured spread as its uncertainty.
"""

from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .dataformat import Sequence
from .errors import DataError

# Chat markup the fallback adds per message (role header + end-of-turn), and per sequence (BOS/EOS):
# the ChatML and Llama 3 templates spend 4-5 tokens per message; 4 is the round figure.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_SEQUENCE = 2
# ChatML, the template TRL installs on models that have none (trl.setup_chat_format).
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


@lru_cache(maxsize=1)
def ratios() -> dict:
    text = resources.files("ftplan.sizing").joinpath("data/chars_per_token.json").read_text(encoding="utf-8")
    return json.loads(text)


class CharCounter:
    """Tokens from characters: `chars / ratio` plus chat and sequence markup."""

    exact = False

    def __init__(self, vocab_size: int | None = None):
        fams = ratios()["families"]
        if vocab_size:
            name, fam = min(fams.items(), key=lambda kv: abs(math.log(kv[1]["vocab_size"] / vocab_size)))
            if abs(math.log(fam["vocab_size"] / vocab_size)) > math.log(1.15):
                name, fam = None, None
        else:
            name, fam = None, None
        if fam is None:  # no family near this vocabulary: the median over all families
            meds = sorted(f["prose"]["median"] for f in fams.values())
            self.ratio = meds[len(meds) // 2]
            lo = sorted(f["prose"]["p10"] for f in fams.values())[len(meds) // 2]
            hi = sorted(f["prose"]["p90"] for f in fams.values())[len(meds) // 2]
            self.name = "characters / token (all tokenizer families)"
        else:
            self.ratio, lo, hi = fam["prose"]["median"], fam["prose"]["p10"], fam["prose"]["p90"]
            self.name = f"characters / token ({name}-like vocabulary)"
        # p10..p90 of chars/token across documents -> relative uncertainty of the token count.
        self.uncertainty = round(max(self.ratio / lo - 1, 1 - self.ratio / hi), 3)
        self.family = name

    def count(self, seqs: list[Sequence]) -> list[int]:
        out = []
        for s in seqs:
            if isinstance(s, str):
                out.append(math.ceil(len(s) / self.ratio) + TOKENS_PER_SEQUENCE)
            else:
                chars = sum(len(_text(m.get("content"))) + len(m.get("role", "")) for m in s)
                out.append(math.ceil(chars / self.ratio) + TOKENS_PER_MESSAGE * len(s) + TOKENS_PER_SEQUENCE)
        return out


def _text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _special(value) -> str:
    if isinstance(value, dict):  # AddedToken serialised in tokenizer_config.json
        return value.get("content", "")
    return value or ""


LONG_TEXT_CHARS = 200_000  # past this, a sequence's tokens are counted on its head and scaled


class TokenizerCounter:
    """Exact counts with a `tokenizer.json` (and the chat template from `tokenizer_config.json`)."""

    def __init__(self, tokenizer_json: Path):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise DataError("counting with a tokenizer.json needs the 'tokenizers' package: pip install tokenizers.") \
                from None
        try:
            self.tok = Tokenizer.from_file(str(tokenizer_json))
        except Exception as exc:  # the Rust side raises a bare Exception on a bad file
            raise DataError(f"{tokenizer_json}: not a usable tokenizer.json ({exc}).") from None
        self.name = f"tokenizer {tokenizer_json}"
        cfg_path = tokenizer_json.parent / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
        template = cfg.get("chat_template")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            template = next((t["template"] for t in template if t.get("name") == "default"), template[0]["template"])
        jinja_file = tokenizer_json.parent / "chat_template.jinja"
        if not template and jinja_file.is_file():
            template = jinja_file.read_text(encoding="utf-8")
        self.template_note = "" if template else "no chat template in tokenizer_config.json: ChatML assumed"
        self._template_src = template or CHATML
        self._specials = {k: _special(cfg.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}

    def _render(self, messages: list[dict]) -> str:
        from .chattemplate import render

        return render(self._template_src, messages, **self._specials)

    def render_error(self, messages: list[dict]) -> str | None:
        """Why the chat template rejects these messages (None: it renders)."""
        try:
            self._render(messages)
        except Exception as exc:  # template authors raise whatever they like
            return str(exc) or type(exc).__name__
        return None

    long_texts = 0  # sequences counted from their first LONG_TEXT_CHARS characters
    counted_tokens = 0  # all tokens counted so far, and those extrapolated past a long text's head
    scaled_tokens = 0
    scale_error = 0.0  # largest relative gap between a long text's head and tail chars/token

    @property
    def exact(self) -> bool:
        return self.long_texts == 0

    @property
    def uncertainty(self) -> float:
        """Zero when every token was counted; else the extrapolated share times the head/tail disagreement."""
        if not self.scaled_tokens:
            return 0.0
        return round(max(0.01, self.scale_error) * self.scaled_tokens / self.counted_tokens, 4)

    def _encode(self, texts: list[str], special: bool) -> list[int]:
        """Token counts; a text past LONG_TEXT_CHARS is counted on its head and scaled by its length, so one
        50 MB line costs what 200k characters do (its tokens past --seq-len are truncated anyway). Its last
        LONG_TEXT_CHARS / 4 characters are counted too: how far their chars/token differ from the head's is
        the extrapolation's uncertainty."""
        heads = [t[:LONG_TEXT_CHARS] for t in texts]
        counts = [len(e.ids) for e in self.tok.encode_batch(heads, add_special_tokens=special)]
        for i, text in enumerate(texts):
            if len(text) > LONG_TEXT_CHARS:
                self.long_texts += 1
                tail = LONG_TEXT_CHARS // 4
                tail_n = len(self.tok.encode(text[-tail:], add_special_tokens=False).ids)
                head_rate, tail_rate = counts[i] / LONG_TEXT_CHARS, tail_n / tail
                if head_rate:
                    self.scale_error = max(self.scale_error, abs(tail_rate - head_rate) / head_rate)
                scaled = round(counts[i] * len(text) / LONG_TEXT_CHARS)
                self.scaled_tokens += scaled - counts[i]
                counts[i] = scaled
        self.counted_tokens += sum(counts)
        return counts

    def count(self, seqs: list[Sequence]) -> list[int]:
        plain = [s for s in seqs if isinstance(s, str)]
        chats = [self._render(s) for s in seqs if not isinstance(s, str)]
        plain_n = iter(self._encode(plain, True)) if plain else iter(())
        chat_n = iter(self._encode(chats, False)) if chats else iter(())
        return [next(plain_n) if isinstance(s, str) else next(chat_n) for s in seqs]


def hub_cache_tokenizer(model_id: str) -> Path | None:
    """`tokenizer.json` of `model_id` in the local Hugging Face cache, if it was downloaded before."""
    if "/" not in model_id:
        return None
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
    snaps = Path(hub) / ("models--" + model_id.replace("/", "--")) / "snapshots"
    if not snaps.is_dir():
        return None
    found = sorted(snaps.glob("*/tokenizer.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    return found[0] if found else None


def find_tokenizer(model: str | None, model_id: str | None, tokenizer: str | None) -> Path | None:
    """The tokenizer.json to count with: --tokenizer, else the --model folder, else the HF cache."""
    if tokenizer:
        path = Path(tokenizer).expanduser()
        path = path / "tokenizer.json" if path.is_dir() else path
        if not path.is_file():
            raise DataError(f"--tokenizer {tokenizer}: no tokenizer.json there; point it at the file or its folder.")
        return path
    if model:
        folder = Path(model).expanduser()
        folder = folder.parent if folder.name == "config.json" else folder
        if (folder / "tokenizer.json").is_file():
            return folder / "tokenizer.json"
    return hub_cache_tokenizer(model_id) if model_id else None


def _features(seq: Sequence) -> tuple[int, int]:
    """(characters, markup units) of a sequence: units are messages for chat, 1 for plain text."""
    if isinstance(seq, str):
        return len(seq), 1
    return sum(len(_text(m.get("content"))) + len(m.get("role", "")) for m in seq), len(seq)


class SampledCounter:
    """Exact counts for the first `exact_first` sequences and every `every`-th after; the rest from a fit.

    Tokenizing costs ~0.5 us a token on two cores, so a 1M-line file would take minutes. Past the
    first `exact_first` sequences, one in `every` is still tokenized exactly and the others get
    `a * characters + b * messages`, least-squares fitted on this file's own exact counts (recent
    ones weigh more, so drift along the file is followed), so the estimate carries the data's real
    chars-per-token. The sampled sequences are predicted before they join the fit: their summed
    error is the estimate's measured bias, reported as its uncertainty. `exact_first=None`
    tokenizes everything.
    """

    DECAY = 0.999  # per exact sequence: the fit's memory is a few thousand samples

    def __init__(self, inner: TokenizerCounter, exact_first: int | None = 50_000, every: int = 20):
        self.inner, self.exact_first, self.every = inner, exact_first, every
        self.name = inner.name
        self.template_note = inner.template_note
        self.seen = 0
        self.estimated = 0
        self.estimated_tokens = 0
        self.exact_tokens = 0
        self._s = [0.0] * 5  # decayed sums of c*c, c*m, m*m, c*t, m*t over exact sequences
        self._check = [0, 0.0, 0.0, 0.0]  # sampled points: n, sum predicted, sum actual, sum squared error
        self._fit: tuple[float, float] | None = None
        self._carry = 0.0

    @property
    def exact(self) -> bool:
        return self.estimated == 0 and self.inner.exact

    @property
    def uncertainty(self) -> float:
        """Relative error of the total: measured bias on sampled sequences plus their spread (plus the long
        texts' extrapolation, `TokenizerCounter.uncertainty`)."""
        n, pred, actual, sq = self._check
        if not self.estimated or n < 2 or not actual:
            return self.inner.uncertainty
        bias = abs(pred - actual) / actual
        spread = math.sqrt(sq / n) / (actual / n) / math.sqrt(n)
        share = self.estimated_tokens / (self.estimated_tokens + self.exact_tokens)
        return round(min(0.5, (bias + spread) * share), 4)

    def render_error(self, messages: list[dict]) -> str | None:
        return self.inner.render_error(messages)

    def _solve(self) -> tuple[float, float]:
        cc, cm, mm, ct, mt = self._s
        det = cc * mm - cm * cm
        if abs(det) < 1e-9:
            return (ct / cc if cc else 0.25), 0.0
        return (ct * mm - mt * cm) / det, (mt * cc - ct * cm) / det

    def count(self, seqs: list[Sequence]) -> list[int]:
        exact_idx, out = [], [0] * len(seqs)
        for i in range(len(seqs)):
            k = self.seen + i
            # A multiplicative hash picks the 1-in-`every` sample: periodic data cannot alias with it.
            if self.exact_first is None or k < self.exact_first or (k * 2654435761) % 2**32 < 2**32 // self.every:
                exact_idx.append(i)
        counts = self.inner.count([seqs[i] for i in exact_idx])
        fit = self._fit
        for i, n in zip(exact_idx, counts, strict=True):
            out[i] = n
            self.exact_tokens += n
            c, m = _features(seqs[i])
            if fit is not None and self.exact_first is not None and self.seen + i >= self.exact_first:
                guess = fit[0] * c + fit[1] * m  # predicted before this point joins the fit
                chk = self._check
                chk[0] += 1
                chk[1] += guess
                chk[2] += n
                chk[3] += (guess - n) ** 2
            d, s = self.DECAY, self._s
            s[0] = s[0] * d + c * c
            s[1] = s[1] * d + c * m
            s[2] = s[2] * d + m * m
            s[3] = s[3] * d + c * n
            s[4] = s[4] * d + m * n
        self._fit = self._solve()
        a, b = self._fit
        exact_set = set(exact_idx)
        for i, seq in enumerate(seqs):
            if i not in exact_set:
                c, m = _features(seq)
                value = a * c + b * m + self._carry  # carry the rounding error: the total stays unbiased
                out[i] = max(1, round(value))
                self._carry = value - out[i]
                self.estimated += 1
                self.estimated_tokens += out[i]
        self.seen += len(seqs)
        return out
