"""Provider names -> the class that runs jobs there. Adding a provider is one module and one line here.

Entries name the class by import path, so listing providers (`ftplan run --help`) imports none of
them; `get()` imports only the one a command uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ftplan.sizing.errors import FtplanError

if TYPE_CHECKING:  # the registry itself stays import-light: `ftplan estimate` loads this module
    from .base import Provider

# name: (module:Class, one-line summary)
PROVIDERS: dict[str, tuple[str, str]] = {
    "local": ("ftplan.providers.local:LocalProvider", "this machine (its GPUs, or the CPU for tiny models)"),
    "modal": ("ftplan.providers.modal_provider:ModalProvider", "Modal GPUs, billed per second"),
    "together": ("ftplan.providers.together:TogetherProvider", "Together AI's managed fine-tuning API"),
    "openai": ("ftplan.providers.openai_ft:OpenAIProvider", "OpenAI's fine-tuning API (legacy, its own models)"),
}


def names() -> list[str]:
    return list(PROVIDERS)


def help_text() -> str:
    return "; ".join(f"{name}: {summary}" for name, (_, summary) in PROVIDERS.items())


def get(name: str) -> Provider:
    entry = PROVIDERS.get(name)
    if entry is None:
        raise FtplanError(f"--provider {name!r} is not known; choose one of {', '.join(PROVIDERS)}.")
    module, _, cls = entry[0].partition(":")
    return getattr(importlib.import_module(module), cls)()
