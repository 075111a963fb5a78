"""Render chat templates as transformers does, without importing transformers.

The environment mirrors transformers' `_compile_jinja_template` (utils/chat_template_utils.py):
a sandbox with trim_blocks and lstrip_blocks, `loopcontrols`, a `{% generation %}` block (TRL's
and model authors' training templates mark assistant output with it), a `tojson` filter that does
not escape HTML and takes indent/separators/sort_keys, and the globals `raise_exception`,
`strftime_now`, `dict` and `namespace`. So a template `estimate` accepts is one the trainer
accepts, and the assistant spans it marks are the ones transformers would mark.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache


def _environment():
    import jinja2
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """`{% generation %}...{% endgeneration %}`: renders its body, and records where it fell when tracking."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_mark"), [], [], body).set_lineno(lineno)

        def _mark(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    class TemplateNamespace(jinja2.utils.Namespace):
        """As transformers': no underscore attributes, so a template cannot reach interpreter internals."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot set {name!r} on a namespace")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["dict"] = dict
    env.globals["namespace"] = TemplateNamespace
    return env


@lru_cache(maxsize=8)
def compile_template(source: str):
    return _environment().from_string(source)


def render(source: str, messages: list[dict], *, add_generation_prompt: bool = False, **specials) -> str:
    """The text transformers' `apply_chat_template(messages, tokenize=False)` produces for this template."""
    # transformers passes tools and documents explicitly (None when absent): templates may test `is defined`.
    return compile_template(source).render(messages=messages, tools=None, documents=None,
                                           add_generation_prompt=add_generation_prompt, **specials)


def has_generation_markers(source: str) -> bool:
    """As TRL's `has_generation_markers`: the template marks assistant output with `{% generation %}`."""
    import re

    return re.search(r"\{%-?\s*generation\s*-?%\}", source) is not None
