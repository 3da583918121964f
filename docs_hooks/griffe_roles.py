"""Griffe extension for the API reference: the docstrings' Sphinx roles shown as code.

The docstrings write ``:func:`record``` and ``:mod:`.tokens``` (readable in ``help()``); Markdown
would print the role's name before the code span. This drops the role and keeps the code span, so
the rendered page shows `record`, `.tokens`.
"""

import re

import griffe

_ROLE = re.compile(r":(?:mod|func|class|attr|data|meth|obj|exc|py:\w+):(`+)")


class SphinxRolesAsCode(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(r"\1", obj.docstring.value)
