"""A tiny random-weight Llama and a tokenizer trained on the spot: the same code path as a real model.

    python -m ftplan.recipes.tiny OUT_DIR [--layers 2] [--hidden 64]

Writes a Hugging Face model folder (config.json, safetensors, tokenizer files with a ChatML
chat template) that `ftplan run` can train on a laptop CPU in seconds. Nothing is downloaded.
Used by the tests and by the README's end-to-end local run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ftplan.sizing.tokencount import CHATML

SPECIALS = ["<unk>", "<pad>", "<s>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "what is two plus two? four. what is the capital of france? paris.",
    "explain photosynthesis in one sentence. plants turn light, water and carbon dioxide into sugar.",
    "the quick brown fox jumps over the lazy dog. user assistant system answer question",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 answer with the number only.",
]


def build_tiny_model(out: str | Path, layers: int = 2, hidden: int = 64, vocab: int = 512,
                     texts: list[str] | None = None, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((texts or []) + CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="<|im_end|>")
    fast.chat_template = CHATML
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
                      tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(out)
    (out / "ftplan-tiny.json").write_text(json.dumps({"layers": layers, "hidden": hidden, "seed": seed}))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64)
    args = ap.parse_args(argv)
    print(build_tiny_model(args.out, args.layers, args.hidden))
    return 0


if __name__ == "__main__":
    sys.exit(main())
