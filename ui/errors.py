"""Bad input as a message in the page, never a stack trace."""
from __future__ import annotations

import functools
import inspect

import gradio as gr


def visible_errors(fn):
    """Show a ``ValueError`` (bad input: the library says what is wrong) as a message in the page."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except ValueError as e:
                raise gr.Error(str(e), print_exception=False) from e
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except ValueError as e:
                raise gr.Error(str(e), print_exception=False) from e
    return wrapper
