"""Sphinx directives that render chatauth's reference tables from its own source.

Each table is generated at build time, so the docs cannot drift from the code,
and each directive warns (an error under ``sphinx-build -W``) when the source
lacks what the page needs:

``chatauth-settings``
    Every key of :data:`chatauth.conf.DEFAULTS`, grouped by the section comments
    (``# --- Signing ---``), with its default and its description: the comment
    lines directly above the key and/or the comment trailing on its line.  A
    key with neither is a warning: an undocumented setting fails the build.
``chatauth-close-codes``
    Every member of :class:`chatauth.constants.CloseCode`, described the same
    way (comments above or trailing), sorted by code.
``chatauth-errors``
    Every row of :data:`chatauth.exceptions.ERRORS`: code, default message,
    HTTP status, WebSocket close code.
``chatauth-checks``
    Every ``Error``/``Warning`` with an ``id="chatauth.…"`` in
    the ``chatauth/checks/`` package: its level, when it runs (``check`` or ``check
    --deploy``), its message and hint (f-string fields shown as ``…``).
``chatauth-routes``
    Every operation of the OpenAPI schema under ``/auth/`` (drf-spectacular's
    ``SchemaGenerator``): method, path, summary, authentication, request body,
    status codes.  Each ``METHOD auth/path`` must also appear in the page's own
    text (its section on that route), else a warning.
``chatauth-schemas``
    The request and response bodies (the schema's components) as field tables.
``chatauth-modules``
    One line per module of the package, from its docstring (a module without
    one is a warning).
``chatauth-command NAME``
    The arguments of ``manage.py NAME`` from its argparse parser.  A command in
    ``chatauth/management/commands/`` that no page documents is a warning.

Django must be set up before the directives run (``docs/conf.py`` does).
"""

from __future__ import annotations

import ast
import importlib.util
import io
import pkgutil
import re
import tokenize
from datetime import timedelta
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

SECTION = re.compile(r"^#\s*-{2,}\s*(?P<name>.*?)\s*-*\s*$")


# --- Reading comments ---------------------------------------------------------------


def module_source(module_name: str) -> tuple[Path, str]:
    """The path and text of ``module_name``'s source file (not importing it)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"cannot find the source of {module_name}")
    path = Path(spec.origin)
    return path, path.read_text(encoding="utf-8")


class Comments:
    """The comments of one source file, by line: full-line and trailing."""

    def __init__(self, source: str) -> None:
        self.lines = source.splitlines()
        self.full: dict[int, str] = {}  # line number -> text of a comment line
        self.trailing: dict[int, str] = {}  # line number -> comment after code
        tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        for token in tokens:
            if token.type != tokenize.COMMENT:
                continue
            line = token.start[0]
            before = self.lines[line - 1][: token.start[1]]
            target = self.full if not before.strip() else self.trailing
            target[line] = token.string

    def section(self, line: int) -> str | None:
        """The section named on ``line`` (``# --- Name ---``), if it is one."""
        found = SECTION.match(self.full.get(line, ""))
        if not found:
            return None
        # A parenthetical remark is not part of a section's name.
        return re.sub(r"\s*\(.*?\)\s*$", "", found["name"]) or None

    def describe(self, line: int) -> str:
        """The comment block directly above ``line`` (up to a section header or
        a line that is not a comment) and the comment trailing on it, joined."""
        above: list[str] = []
        current = line - 1
        while current in self.full and self.section(current) is None:
            above.append(_strip_hash(self.full[current]))
            current -= 1
        parts = [*reversed(above)]
        if line in self.trailing:
            parts.append(_strip_hash(self.trailing[line]))
        text = _join(parts)
        return text[:1].upper() + text[1:]

    def section_of(self, line: int, stop: int) -> str | None:
        """The nearest section header above ``line`` and below ``stop``."""
        for current in range(line - 1, stop, -1):
            name = self.section(current)
            if name:
                return name
        return None


def _strip_hash(comment: str) -> str:
    text = comment.lstrip("#")
    text = text.removeprefix(":")  # "#:" Sphinx-style attribute comments
    return text.strip()


def _join(parts: list[str]) -> str:
    text = " ".join(p for p in parts if p)
    # "noqa", "fmt: skip" and friends are for tools, not readers.
    text = re.sub(r"\s*(noqa|fmt: ?skip|type: ?ignore)\b.*$", "", text)
    return re.sub(r"\s+", " ", text).strip()


# --- Values -------------------------------------------------------------------------

UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def human_duration(value: timedelta) -> str:
    """``timedelta(minutes=15)`` -> "15 minutes" (the largest exact unit)."""
    seconds = value.total_seconds()
    for name, size in UNITS:
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {name}{'s' if count != 1 else ''}"
    return f"{seconds:g} seconds"


def render_default(value: Any) -> str:
    """A default as Markdown: durations in words, sizes in KiB, else the repr."""
    if isinstance(value, timedelta):
        return human_duration(value)
    text = f"`{value!r}`"
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 1024 and value % 1024 == 0:
            text += f" ({value // 1024} KiB)"
    return text


def cell(text: str) -> str:
    """``text`` made safe for one cell of a Markdown table."""
    return text.replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


class MarkdownDirective(SphinxDirective):
    """A directive that renders generated Markdown in the page's own parser."""

    has_content = False

    def render(self, markdown: str, headings: bool = False) -> list[nodes.Node]:
        return self.parse_text_to_nodes(markdown, allow_section_headings=headings)

    def warn(self, message: str) -> None:
        logger.warning(message, location=(self.env.docname, self.lineno))

    def depends_on(self, path: Path) -> None:
        self.env.note_dependency(str(path))


# --- Settings -----------------------------------------------------------------------


def settings_rows() -> tuple[list[tuple[str | None, str, Any, str]], Path]:
    """``(section, key, default, description)`` for each key of DEFAULTS, in
    source order."""
    from chatauth import conf

    path, source = module_source("chatauth.conf")
    comments = Comments(source)
    tree = ast.parse(source)
    found = None
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Assign):
            targets = node.targets
        if any(isinstance(t, ast.Name) and t.id == "DEFAULTS" for t in targets):
            found = node.value
    if not isinstance(found, ast.Dict):
        raise RuntimeError("chatauth/conf.py: no DEFAULTS = {...} literal")
    rows = []
    section = None
    previous = found.lineno
    for key in found.keys:
        if not isinstance(key, ast.Constant) or not isinstance(key.value, str):
            continue
        section = comments.section_of(key.lineno, previous) or section
        rows.append(
            (
                section,
                key.value,
                conf.DEFAULTS[key.value],
                comments.describe(key.lineno),
            )
        )
        previous = key.lineno
    return rows, path


class SettingsDirective(MarkdownDirective):
    """Every key of ``chatauth.conf.DEFAULTS`` in tables, one per section."""

    def run(self) -> list[nodes.Node]:
        from chatauth import conf

        rows, path = settings_rows()
        self.depends_on(path)
        listed = {key for _, key, _, _ in rows}
        for key in conf.DEFAULTS:
            if key not in listed:
                self.warn(f"chatauth setting {key!r} is not a literal key of DEFAULTS")
        renamed = {new: old for new, old in conf.RENAMED.items()}
        markdown = []
        sections: dict[str | None, list[list[str]]] = {}
        for section, key, default, description in rows:
            if not description:
                self.warn(
                    f"chatauth setting {key!r} has no description: write a comment "
                    "above it (or trailing on its line) in chatauth/conf.py"
                )
            if key in renamed:
                description += f" (Formerly `{renamed[key]}`, still read.)"
            if key in conf.IMPORT_STRINGS:
                description += " (An import string.)"
            if key in conf.TIMEDELTAS:
                description += " (A `timedelta` or a number of seconds.)"
            sections.setdefault(section, []).append(
                [f"`{key}`", render_default(default), description]
            )
        for section, section_rows in sections.items():
            if section:
                markdown.append(f"### {section}\n")
            markdown.append(table(["Setting", "Default", "Description"], section_rows))
        return self.render("\n".join(markdown), headings=True)


# --- Close codes --------------------------------------------------------------------


class CloseCodesDirective(MarkdownDirective):
    """Every member of ``chatauth.constants.CloseCode``, by code."""

    def run(self) -> list[nodes.Node]:
        from chatauth.constants import CloseCode

        path, source = module_source("chatauth.constants")
        self.depends_on(path)
        comments = Comments(source)
        tree = ast.parse(source)
        body = next(
            n.body
            for n in tree.body
            if isinstance(n, ast.ClassDef) and n.name == "CloseCode"
        )
        rows = []
        for node in body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
                continue
            target = node.targets[0]
            if not isinstance(target, ast.Name):
                continue
            description = comments.describe(node.lineno)
            if not description:
                self.warn(
                    f"close code CloseCode.{target.id} has no description: write "
                    "a comment above it (or trailing on its line) in "
                    "chatauth/constants.py"
                )
            code = int(CloseCode[target.id])
            rows.append((code, [f"`{code}`", f"`{target.id}`", description]))
        rows.sort(key=lambda row: row[0])
        markdown = table(["Code", "Name", "Meaning"], [row for _, row in rows])
        return self.render(markdown)


# --- Error codes --------------------------------------------------------------------


class ErrorsDirective(MarkdownDirective):
    """Every row of ``chatauth.exceptions.ERRORS``: code, message, HTTP status,
    close code."""

    def run(self) -> list[nodes.Node]:
        from chatauth.exceptions import ERRORS

        path, _ = module_source("chatauth.exceptions")
        self.depends_on(path)
        rows = []
        for row in sorted(ERRORS.values(), key=lambda r: (r.status, r.code)):
            close = "—" if row.close_code is None else f"`{int(row.close_code)}`"
            rows.append(
                [
                    f"`{row.code}`",
                    _code_safe(str(row.message)),
                    f"`{row.status}`",
                    close,
                ]
            )
        markdown = table(["Code", "Message", "HTTP status", "Close code"], rows)
        return self.render(markdown)


# --- System checks ------------------------------------------------------------------

LEVELS = {"Error": "error", "Warning": "warning", "Critical": "critical"}


def literal_text(node: ast.AST | None) -> str:
    """The text of a message or hint: string parts as written, the fields of an
    f-string (and any other expression) as "…"."""
    if node is None:
        return ""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(literal_text(v) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return literal_text(node.left) + literal_text(node.right)
    if isinstance(node, ast.IfExp):  # the first variant
        return literal_text(node.body)
    return "…"


def package_sources(package_name: str) -> list[tuple[Path, str]]:
    """The path and text of every module of ``package_name`` (not importing
    it), ``__init__`` first; a plain module is a package of one."""
    spec = importlib.util.find_spec(package_name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"cannot find the source of {package_name}")
    if not spec.submodule_search_locations:
        return [module_source(package_name)]
    paths = sorted(
        Path(spec.origin).parent.glob("*.py"), key=lambda p: (p.stem != "__init__", p)
    )
    return [(path, path.read_text(encoding="utf-8")) for path in paths]


def checks_found() -> tuple[dict[str, dict[str, Any]], list[Path]]:
    """``id -> {level, deploy, messages, hints}`` from the chatauth.checks package."""
    sources = package_sources("chatauth.checks")
    functions: dict[str, ast.FunctionDef] = {}
    for _path, source in sources:
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef):
                if node.name in functions:
                    raise RuntimeError(
                        f"two functions named {node.name} in chatauth.checks: "
                        "the check table needs unique names"
                    )
                functions[node.name] = node
    deploy: set[str] = set()
    for name, function in functions.items():
        for decorator in function.decorator_list:
            if isinstance(decorator, ast.Call) and any(
                k.arg == "deploy" and getattr(k.value, "value", False)
                for k in decorator.keywords
            ):
                deploy.add(name)
    # Helpers called only from a deploy check run only under --deploy too.
    changed = True
    while changed:
        changed = False
        for name in list(deploy):
            for node in ast.walk(functions[name]):
                if (
                    isinstance(node, ast.Name)
                    and node.id in functions
                    and node.id not in deploy
                ):
                    deploy.add(node.id)
                    changed = True
    found: dict[str, dict[str, Any]] = {}
    for name, function in functions.items():
        for node in ast.walk(function):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in LEVELS
            ):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            check_id = getattr(keywords.get("id"), "value", None)
            if not isinstance(check_id, str) or not check_id.startswith("chatauth."):
                continue
            entry = found.setdefault(
                check_id,
                {
                    "level": LEVELS[node.func.id],
                    "deploy": name in deploy,
                    "messages": [],
                    "hints": [],
                },
            )
            message = literal_text(node.args[0] if node.args else keywords.get("msg"))
            hint = literal_text(keywords.get("hint"))
            if message and message not in entry["messages"]:
                entry["messages"].append(message)
            if hint and hint not in entry["hints"]:
                entry["hints"].append(hint)
    return found, [path for path, _ in sources]


def _check_key(check_id: str) -> tuple[str, int]:
    """``chatauth.E001`` -> ``("E", 1)``: errors first, then by number."""
    name = check_id.partition(".")[2]
    return name[:1], int(re.sub(r"\D", "", name) or 0)


class ChecksDirective(MarkdownDirective):
    """Every ``chatauth.*`` system check id in the chatauth.checks package.

    The content may add a note to an id, one per line (``chatauth.E003: what
    it means``): needed where the message is built at run time (nothing but
    "…" can be read from the source), else a warning."""

    has_content = True

    def run(self) -> list[nodes.Node]:
        found, paths = checks_found()
        for path in paths:
            self.depends_on(path)
        notes = {}
        for line in self.content:
            check_id, _, note = line.partition(":")
            if line.strip():
                notes[check_id.strip()] = note.strip()
        for check_id in notes:
            if check_id not in found:
                self.warn(f"a note for {check_id}, which chatauth.checks lacks")
        rows = []
        for check_id in sorted(found, key=_check_key):
            entry = found[check_id]
            readable = [m for m in entry["messages"] if m.strip("…. ")]
            note = notes.get(check_id)
            if not readable and not note:
                self.warn(
                    f"system check {check_id}'s message is built at run time: "
                    "give it a note in the chatauth-checks directive"
                )
            message = " / ".join(f"“{_code_safe(m)}”" for m in readable)
            if note:
                message = f"{message} ({note})" if message else note
            hint = " / ".join(_code_safe(h) for h in entry["hints"]) or "—"
            runs = "`check --deploy`" if entry["deploy"] else "`check`"
            rows.append([f"`{check_id}`", entry["level"], runs, message, hint])
        markdown = table(["Id", "Level", "Runs in", "Message", "Hint"], rows)
        return self.render(markdown)


def _code_safe(text: str) -> str:
    """Keep Markdown from reading a message's punctuation as markup."""
    return text.replace("*", "\\*").replace("<", "&lt;").replace("_", "\\_")


# --- HTTP routes ----------------------------------------------------------------------

SECURITY = {
    "bearerAuth": "bearer token",
    "apiKeyAuth": "API key",
    "cookieAuth": "session cookie",
}


def openapi_schema() -> dict[str, Any]:
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


def _ref_name(schema: dict[str, Any] | None) -> str:
    if not schema:
        return "—"
    if "$ref" in schema:
        return "`" + schema["$ref"].rsplit("/", 1)[-1] + "`"
    if schema.get("type") == "array":
        return "list of " + _ref_name(schema.get("items"))
    return "`" + str(schema.get("type", "object")) + "`"


def route_operations() -> list[tuple[str, str, dict[str, Any]]]:
    """``(METHOD, path, operation)`` of every operation under ``/auth/``."""
    schema = openapi_schema()
    found = []
    for path, operations in schema.get("paths", {}).items():
        if not path.startswith("/auth/"):
            continue
        for method, operation in operations.items():
            found.append((method.upper(), path.lstrip("/"), operation))
    return found


class RoutesDirective(MarkdownDirective):
    """Every route of chatauth's OpenAPI schema in one table."""

    def run(self) -> list[nodes.Node]:
        page = Path(self.env.doc2path(self.env.docname)).read_text(encoding="utf-8")
        rows = []
        for method, path, operation in route_operations():
            route = f"{method} {path}"
            if route not in page:
                self.warn(
                    f"route {route!r} of the OpenAPI schema is not described on "
                    "this page (write a section that names it)"
                )
            security = [
                SECURITY.get(name, name)
                for requirement in operation.get("security", [])
                for name in requirement
            ]
            anonymous = {} in operation.get("security", [{}])
            auth = ", ".join(security) or "none"
            if security and anonymous:
                auth += " (or none)"
            body = operation.get("requestBody", {}).get("content", {})
            request = _ref_name(next(iter(body.values()), {}).get("schema"))
            responses = ", ".join(sorted(operation.get("responses", {})))
            summary = (
                operation.get("summary")
                or (operation.get("description", "").split("\n")[0])
            )
            rows.append([f"`{route}`", summary, auth, request, responses])
        markdown = table(["Route", "What", "Credentials", "Body", "Statuses"], rows)
        return self.render(markdown)


class SchemasDirective(MarkdownDirective):
    """The bodies of chatauth's routes (the schema's components), as tables."""

    def run(self) -> list[nodes.Node]:
        components = openapi_schema().get("components", {}).get("schemas", {})
        markdown = []
        for name, schema in sorted(components.items()):
            required = set(schema.get("required", []))
            rows = []
            for field, spec in schema.get("properties", {}).items():
                kind = _ref_name(spec) if "$ref" in spec else _type_of(spec)
                notes = []
                if field in required:
                    notes.append("required")
                if spec.get("readOnly"):
                    notes.append("response only")
                if spec.get("nullable"):
                    notes.append("may be null")
                if "maxLength" in spec:
                    notes.append(f"at most {spec['maxLength']} characters")
                if "default" in spec:
                    notes.append(f"default `{spec['default']!r}`")
                rows.append([f"`{field}`", kind, ", ".join(notes)])
            markdown.append(f"**`{name}`**\n")
            markdown.append(table(["Field", "Type", "Notes"], rows))
        return self.render("\n".join(markdown))


def _type_of(spec: dict[str, Any]) -> str:
    kind = spec.get("type", "any")
    if kind == "array":
        return "list of " + _type_of(spec.get("items", {}))
    if kind == "object" and "additionalProperties" in spec:
        return "object"
    if spec.get("format"):
        return f"{kind} ({spec['format']})"
    if "allOf" in spec:
        return _ref_name(spec["allOf"][0])
    return str(kind)


# --- Module map ---------------------------------------------------------------------

ROLE = re.compile(r":[a-z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")


def first_sentence(docstring: str) -> str:
    """The first sentence of a docstring, its reST markup made Markdown."""
    text = " ".join(docstring.split("\n\n")[0].split())
    text = ROLE.sub(lambda m: f"`{m[1].rsplit('.', 1)[-1]}`", text)
    text = text.replace("``", "`")
    found = re.match(r"(.+?\.)(\s|$)", text)
    return found[1] if found else text


class ModulesDirective(MarkdownDirective):
    """One line per module of the ``chatauth`` package: the first sentence of its
    docstring.  The content may describe a module without one (``name:
    text``); a module with neither is a warning."""

    has_content = True

    def run(self) -> list[nodes.Node]:
        import chatauth

        notes = {}
        for line in self.content:
            name, _, note = line.partition(":")
            if line.strip():
                notes[name.strip()] = note.strip()
        root = Path(chatauth.__file__).parent
        rows = []
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if "migrations" in parts or "tests" in parts:
                continue
            if parts[-1] == "__init__" and not path.read_text("utf-8").strip():
                continue  # an empty package marker: its modules speak for it
            if parts[-1] == "__init__" and len(parts) > 1:
                parts = parts[:-1]
            elif parts[-1] == "__init__":
                parts = ()
            if parts and parts[0] == "management" and len(parts) < 3:
                continue  # namespace packages: the commands speak for them
            name = ".".join(("chatauth", *parts))
            docstring = ast.get_docstring(ast.parse(path.read_text("utf-8"))) or ""
            text = notes.get(name) or (first_sentence(docstring) if docstring else "")
            if not text:
                self.warn(
                    f"module {name} has no docstring: give it one (or a line in "
                    "the chatauth-modules directive)"
                )
            rows.append([f"`{name}`", text])
        for extra in ("static/chatauth/copilot.js",):
            rows.append([f"`chatauth/{extra}`", "The copilot widget: {doc}`widget`."])
        return self.render(table(["Module", "What it does"], rows))


# --- Management commands --------------------------------------------------------------

#: Options every Django command has: documented by Django, not here.
BASE_OPTIONS = {
    "help",
    "version",
    "verbosity",
    "settings",
    "pythonpath",
    "traceback",
    "no_color",
    "force_color",
    "skip_checks",
}


def chatauth_commands() -> list[str]:
    import chatauth.management.commands as package

    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.ispkg)


def _argument_rows(parser: Any, prefix: str = "") -> list[list[str]]:
    import argparse

    rows = []
    for action in parser._actions:
        if action.dest in BASE_OPTIONS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                rows.append([f"`{prefix}{name}`", helps.get(name) or ""])
                rows += _argument_rows(sub, prefix=f"{prefix}{name} ")
            continue
        if action.option_strings:
            names = ", ".join(action.option_strings)
            if action.nargs != 0:
                names += " " + (action.metavar or action.dest.upper())
        else:
            names = action.metavar or action.dest.upper()
        text = action.help or ""
        shown = action.default not in (None, argparse.SUPPRESS)
        if action.option_strings and action.nargs != 0 and shown:
            if "default" not in text:
                text += f" (default `{action.default}`)"
        rows.append([f"`{prefix}{names}`", text])
    return rows


class CommandDirective(MarkdownDirective):
    """``manage.py NAME``'s description and arguments, from its parser."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        from django.core.management import load_command_class

        name = self.arguments[0]
        if name not in chatauth_commands():
            self.warn(f"no chatauth management command {name!r}")
            return []
        self.env.chatauth_commands = getattr(self.env, "chatauth_commands", set())
        self.env.chatauth_commands.add(name)
        command = load_command_class("chatauth", name)
        parser = command.create_parser("manage.py", name)
        module = importlib.util.find_spec(f"chatauth.management.commands.{name}")
        if module and module.origin:
            self.depends_on(Path(module.origin))
        markdown = [f"{command.help}\n"]
        rows = _argument_rows(parser)
        if rows:
            markdown.append(table(["Argument", "Meaning"], rows))
        return self.render("\n".join(markdown))


def check_commands(app: Sphinx, env: Any) -> None:
    documented = getattr(env, "chatauth_commands", set())
    for name in chatauth_commands():
        if name not in documented:
            logger.warning(
                f"management command {name!r} is documented on no page: add a "
                f"```{{chatauth-command}} {name}``` block to docs/commands.md"
            )


def merge_commands(app: Sphinx, env: Any, docnames: Any, other: Any) -> None:
    env.chatauth_commands = getattr(env, "chatauth_commands", set()) | getattr(
        other, "chatauth_commands", set()
    )


def purge_commands(app: Sphinx, env: Any, docname: str) -> None:
    # Rebuilt as pages are read again; an incremental build re-reads the page.
    if docname == "commands":
        env.chatauth_commands = set()


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("chatauth-settings", SettingsDirective)
    app.add_directive("chatauth-close-codes", CloseCodesDirective)
    app.add_directive("chatauth-errors", ErrorsDirective)
    app.add_directive("chatauth-checks", ChecksDirective)
    app.add_directive("chatauth-routes", RoutesDirective)
    app.add_directive("chatauth-schemas", SchemasDirective)
    app.add_directive("chatauth-command", CommandDirective)
    app.add_directive("chatauth-modules", ModulesDirective)
    app.connect("env-check-consistency", check_commands)
    app.connect("env-merge-info", merge_commands)
    app.connect("env-purge-doc", purge_commands)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
