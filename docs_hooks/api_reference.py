"""MkDocs hook: the Python API reference, one mkdocstrings section per public module.

A page that holds the line ``<!-- api-reference -->`` gets one ``::: module`` directive per
public module of ``tl_langneurons`` (found by walking the package, so a new module appears without
editing the page; modules and packages whose name starts with ``_`` are private, and the command
line has its own generated page). mkdocstrings then renders each from its docstrings.
"""

import pkgutil

MARKER = "<!-- api-reference -->"
SKIP = ("tl_langneurons.cli", "tl_langneurons.__main__")


def public_modules() -> list[str]:
    import tl_langneurons

    names = ["tl_langneurons"]
    for info in pkgutil.walk_packages(tl_langneurons.__path__, "tl_langneurons."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts[1:]) or info.name.startswith(SKIP):
            continue
        names.append(info.name)
    return names


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    blocks = [f"::: {name}\n    options:\n      members_order: source\n" for name in public_modules()]
    return markdown.replace(MARKER, "\n".join(blocks))
