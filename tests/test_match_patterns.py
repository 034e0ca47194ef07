"""Error-text pins mean what they say: no ``match=`` pattern holds an unescaped regex ``|``.

A ``match`` pattern of ``pytest.raises`` is a regular expression: the bar of edgelstm's
``subject | problem`` messages makes it "subject " OR " problem", which almost any message
satisfies. Patterns must be ``re.escape(...)``'d or escape the bar (``\\|``); alternatives inside
a group, ``(a|b)``, are deliberate. This walks every test file's syntax tree and lists each
literal ``match=`` pattern with a bare ``|`` outside a group.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


def _bare_bar(pattern: str) -> bool:
    """A ``|`` outside any group: one inside ``(a|b)`` is a deliberate alternative."""
    escaped, depth = False, 0
    for ch in pattern:
        if not escaped:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth = max(0, depth - 1)
            elif ch == "|" and depth == 0:
                return True
        escaped = ch == "\\" and not escaped
    return False


def offending(source: str, name: str) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        for kw in node.keywords:
            if kw.arg == "match" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str) \
                    and _bare_bar(kw.value.value):
                out.append(f"{name}:{kw.value.lineno}: match={kw.value.value!r}")
    return out


CALL = "pytest.raises(E, match={})"  # the samples are built, so no literal one stands in this file


@pytest.mark.parametrize("pattern, bad", [
    ('"a | b"', True),
    ('r"a \\| b"', False),
    ('re.escape("a | b")', False),
    ('"no bar"', False),
    ('r"m \\| is (empty|truncated)"', False),
], ids=["bare", "escaped", "re.escape", "none", "alternatives-in-a-group"])
def test_the_check_itself(pattern, bad):
    assert bool(offending(CALL.format(pattern), "t.py")) is bad


def test_no_test_pins_an_error_with_a_bare_bar():
    found = [hit for f in sorted(TESTS.rglob("*.py")) for hit in offending(f.read_text(), f.name)]
    assert not found, "unescaped '|' in match= (use re.escape):\n" + "\n".join(found)
