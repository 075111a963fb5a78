"""ftplan renders chat templates as transformers does (so what `estimate` accepts, the trainer accepts).

Independent reference: transformers' own `apply_chat_template(tokenize=False)`, on every chat
template TRL ships (the published templates of Llama 3, Qwen, Gemma, Phi-3, DeepSeek, ... and their
training variants with `{% generation %}` blocks), for plain chats and an assistant turn with
`tool_calls` (rendered through `tojson`).
"""

from pathlib import Path

import pytest

from ftplan.sizing.chattemplate import has_generation_markers, render

pytestmark = [pytest.mark.train]
trl = pytest.importorskip("trl")
TEMPLATES = sorted((Path(trl.__file__).parent / "chat_templates").glob("*.jinja"))
CHATS = {
    "plain": [{"role": "user", "content": "what is two plus two?"}, {"role": "assistant", "content": "four."}],
    "system": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
               {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}],
    "tool_calls": [{"role": "user", "content": "2 * 3?"},
                   {"role": "assistant", "content": "", "tool_calls": [
                       {"type": "function", "function": {"name": "multiply", "arguments": {"a": 2, "b": "ü<3>"}}}]},
                   {"role": "tool", "name": "multiply", "content": "6"}],
}


def transformers_render(template: str, messages, gen: bool):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")),
                                  bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    return tok.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=gen)


@pytest.mark.parametrize("chat", sorted(CHATS))
@pytest.mark.parametrize("path", TEMPLATES, ids=[p.stem for p in TEMPLATES])
def test_renders_as_transformers_does(path, chat):
    template = path.read_text()
    for gen in (False, True):
        try:
            expected = transformers_render(template, CHATS[chat], gen)
        except Exception as exc:  # the template refuses this chat: ftplan must refuse it too
            with pytest.raises(Exception):  # noqa: B017 - template authors raise what they like
                render(template, CHATS[chat], add_generation_prompt=gen, bos_token="<s>", eos_token="</s>")
            assert exc is not None
            continue
        got = render(template, CHATS[chat], add_generation_prompt=gen, bos_token="<s>", eos_token="</s>",
                     unk_token="<unk>")
        assert got == expected


def test_generation_markers_are_found_as_trl_finds_them():
    from trl.chat_template_utils import has_generation_markers as trl_has

    for path in TEMPLATES:
        assert has_generation_markers(path.read_text()) == trl_has(path.read_text()), path.name
