"""The package's layout rules (``python -m tools.layout``): no import cycle among
chatauth's modules, function-level imports counted, and no module over 450
lines.  A failure names the cycle or the module."""

from __future__ import annotations

from tools import layout


def test_no_import_cycle():
    edges = layout.graph(layout.modules())
    assert [layout.path_round(c, edges) for c in layout.cycles(edges)] == []


def test_no_module_over_the_limit():
    assert layout.long_modules(layout.modules()) == []


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    package = tmp_path / "chatauth"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from chatauth.sub import b\n")
    (package / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from chatauth import c\n"
        "def f():\n    from .. import a\n"
    )
    (package / "c.py").write_text("import chatauth.a\n")
    edges = layout.graph(layout.modules(tmp_path))
    assert layout.cycles(edges) == [["chatauth.a", "chatauth.sub.b"]]
    assert edges["chatauth.sub.b"] == {"chatauth.a"}  # not c: type checking only
    (package / "long.py").write_text("x = 1\n" * (layout.MAX_LINES + 1))
    assert layout.long_modules(layout.modules(tmp_path)) == [
        ("chatauth.long", layout.MAX_LINES + 1)
    ]
