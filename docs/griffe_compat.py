"""Griffe extension for the docs build; the package's docstrings are read, never changed.

Three conventions of the package's Google-style docstrings that griffe reads differently:

* ``Example:`` (singular, as in the Google style guide) is parsed by griffe as a Markdown
  admonition, not as an examples section, so ``a["x"]["y"]`` reads as a Markdown reference
  link. The heading is renamed ``Examples:`` before parsing (rendered as a Python console block).
* Sphinx roles (``:class:`~bo_voids.space.SearchSpace```) mean nothing in Markdown; they are
  shown as code (``SearchSpace``; a leading ``~`` keeps the last component, as in Sphinx).
* A callable that takes ``**kwargs`` and documents the accepted keywords under ``Args:`` (e.g.
  ``BoTorchOptimizer(space, **kwargs)``) would warn "parameter does not appear in the function
  signature" and "no type or annotation" for each keyword. Those two checks are switched off for
  such callables only; every other docstring keeps them (and ``mkdocs build --strict`` fails on
  them).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"(?m)^(?P<indent>[ \t]*)Example:[ \t]*$")
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(?P<target>[^`]+)`")


def _role_to_code(match: re.Match[str]) -> str:
    target = match.group("target").strip()
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target}`"


def _takes_var_keyword(obj: griffe.Function | griffe.Class) -> bool:
    try:
        params = obj.parameters
    except Exception:  # a class without a resolvable __init__
        return False
    return any(p.kind is griffe.ParameterKind.var_keyword for p in params)


class DocstringCompat(griffe.Extension):
    """Read ``Example:`` as ``Examples:``, Sphinx roles as code, ``**kwargs`` keywords as valid."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite headings and roles in each loaded object's docstring."""
        if obj.docstring is not None:
            text = _EXAMPLE.sub(r"\g<indent>Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(_role_to_code, text)

    def on_function(self, *, func: griffe.Function, **kwargs: Any) -> None:
        """Relax the signature checks of a function that takes ``**kwargs``."""
        self._relax(func)

    def on_class(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        """Relax the signature checks of a class whose ``__init__`` takes ``**kwargs``."""
        self._relax(cls)

    @staticmethod
    def _relax(obj: griffe.Function | griffe.Class) -> None:
        if obj.docstring is not None and _takes_var_keyword(obj):
            obj.docstring.parser_options = {
                **(obj.docstring.parser_options or {}),
                "warn_unknown_params": False,
                "warn_missing_types": False,
            }
