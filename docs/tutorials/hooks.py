"""MkDocs hook for the executed tutorials (``docs/tutorials/*.md``, run by markdown-exec).

markdown-exec reports a code block that raises as a *warning* and renders its traceback in the
page, and ``mkdocs build --quiet`` drops warnings before ``--strict`` can count them: a broken
tutorial would build. Here its warnings are logged as errors, which stop any build.
"""

from __future__ import annotations

import logging
from typing import Any

import markdown_exec
import torch


class _AsErrors(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"markdown-exec: {msg}", kwargs

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.error(msg, *args, **kwargs)


def on_config(config: Any) -> Any:
    """Route markdown-exec's reports to mkdocs' logger as errors; one torch thread."""
    markdown_exec.patch_loggers(
        lambda name: _AsErrors(logging.getLogger(f"mkdocs.plugins.{name}"), {})
    )
    # The tutorials' models are tiny: on a small shared machine several intra-op threads
    # contend and make them several times slower (the test suite does the same).
    torch.set_num_threads(1)
    return config
