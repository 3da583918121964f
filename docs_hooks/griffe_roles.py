"""Griffe extension for the API reference: the docstrings' reStructuredText read as Markdown.

The docstrings are written for ``help()``: ``:func:`record``` and ``:mod:`.tokens``` (Markdown would
print the role's name before the code span), and a few reST simple tables between ``=====  =====``
border lines (Markdown would run their rows together into a paragraph). The roles are dropped and
their code spans kept; each table becomes a preformatted block, rows aligned as written.
"""

import re

import griffe

_ROLE = re.compile(r":(?:mod|func|class|attr|data|meth|obj|exc|py:\w+):(`+)")
_BORDER = re.compile(r"^\s*=+(\s+=+)+\s*$")


def _tables_as_text(doc: str) -> str:
    """Each reST simple table — a run of non-blank lines that starts and ends with a border line
    (a header's separator border may sit between) — as a preformatted block."""
    lines, out, i = doc.split("\n"), [], 0
    while i < len(lines):
        j = i
        while j < len(lines) and lines[j].strip():
            j += 1  # lines[i:j] is a run of non-blank lines
        run = lines[i:j]
        if len(run) >= 3 and _BORDER.match(run[0]) and _BORDER.match(run[-1]):
            body = [("-" * len(x.strip()) if _BORDER.match(x) else x) for x in run[1:-1]]
            out += ["```text", *body, "```"]
        else:
            out += run
        if j < len(lines):
            out.append(lines[j])
        i = j + 1
    return "\n".join(out)


class SphinxRolesAsCode(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _tables_as_text(_ROLE.sub(r"\1", obj.docstring.value))
