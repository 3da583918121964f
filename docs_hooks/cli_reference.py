"""MkDocs hook: the command-line reference, generated from the argparse parser at build time.

A page that holds the line ``<!-- cli-reference -->`` gets it replaced by one section per command
(usage, description, every option with its help and default), read from
``tl_langneurons.cli.parser.build_parser()`` — never copied by hand, so it cannot drift from
``tl-langneurons COMMAND --help``. Each command's section has the anchor ``cli-COMMAND``.
"""

import argparse
import html

MARKER = "<!-- cli-reference -->"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """{name: (one-line help, parser)} of a parser's subcommands, in the order they were added."""
    for action in parser._actions:  # argparse has no public accessor for its subparsers
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return {name: (helps.get(name, ""), sub) for name, sub in action.choices.items()}
    return {}


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.dest}`"
    shown = ", ".join(f"`{s}`" for s in action.option_strings)
    if action.nargs != 0:  # an option that takes a value
        shown += f" *{(action.metavar or action.dest).upper()}*"
    return shown


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if action.nargs == 0 or action.default is None or action.default == argparse.SUPPRESS:
        return ""
    return f"`{action.default}`"


def _cell(text: str) -> str:
    """Table-safe text: no pipes or newlines; angle brackets shown, not read as HTML."""
    text = html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")
    return text.replace("[", "\\[").replace("]", "\\]")  # hf:NAME[:CONFIG] is not a Markdown link


def _options_table(actions: list[argparse.Action]) -> list[str]:
    rows = ["| option | default | what it does |", "|---|---|---|"]
    for a in actions:
        if isinstance(a, argparse._HelpAction):
            continue
        helptext = a.help or ""
        if a.choices is not None and not isinstance(a, argparse._SubParsersAction):
            helptext = (helptext + " " if helptext else "") + "(one of: " + ", ".join(map(str, a.choices)) + ")"
        rows.append(f"| {_flags(a)} | {_cell(_default(a))} | {_cell(helptext)} |")
    return rows


def _section(name: str, summary: str, parser: argparse.ArgumentParser) -> list[str]:
    out = [f"## `{name}` {{#cli-{name}}}", ""]
    if summary:
        out += [_cell(summary[:1].upper() + summary[1:]) + ".", ""]
    if parser.description:
        out += [_cell(parser.description), ""]
    out += ["```text", parser.format_usage().strip(), "```", ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        if group.title not in ("options", "optional arguments", "positional arguments"):
            out += [f"**{_cell(group.title)}**" + (f" — {_cell(group.description)}" if group.description else ""), ""]
        out += _options_table(actions) + [""]
    return out


def reference_markdown() -> str:
    """The whole reference as Markdown (also used by the tests)."""
    from tl_langneurons.cli.parser import build_parser

    parser = build_parser()
    commands = _subcommands(parser)
    out = ["| command | what it does |", "|---|---|"]
    out += [f"| [`{n}`](#cli-{n}) | {_cell(h)} |" for n, (h, _) in commands.items()]
    out.append("")
    for name, (summary, sub) in commands.items():
        out += _section(name, summary, sub)
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference_markdown())
