"""Every error code the code can answer with is in the docs' tables, and every code in
the tables is one the code can answer with: docs/API.md (HTTP), docs/PROTOCOL.md (/ws)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]

# Codes made other than by a literal in an ApiError: werkzeug's own errors, named by
# the error handler from their names, and the transport's answer at a drain's end.
HTTP_ELSEWHERE = {(405, "method_not_allowed"), (503, "unavailable")}


def _calls() -> list[tuple[str, list[ast.expr], ast.expr]]:
    found = []
    for folder in ("server", "handlers"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call):
                    func = node.func
                    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                    found.append((name, node.args, func))
    return found


def _literal(node: ast.expr) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def http_codes_in_code() -> set[tuple[int, str]]:
    codes = set(HTTP_ELSEWHERE)
    for name, args, _func in _calls():
        if name == "ApiError" and len(args) >= 2 and isinstance(_literal(args[1]), str):
            status = _literal(args[0])
            assert isinstance(status, int), ast.dump(args[0])
            codes.add((status, str(_literal(args[1]))))
    return codes


def frame_codes_in_code() -> set[str]:
    codes = set()
    for name, args, func in _calls():
        op_error = name == "error" and isinstance(func, ast.Attribute)
        op_error = op_error and isinstance(func.value, ast.Name) and func.value.id == "op"
        if (name in ("ProtocolError", "error_frame") or op_error) and args:
            code = _literal(args[0])
            if isinstance(code, str):
                codes.add(code)
    return codes


def table_rows(doc: str, heading: str) -> list[list[str]]:
    text = (ROOT / "docs" / doc).read_text()
    section = text[text.index(heading) :]
    table = re.search(r"\n(\|.*\|\n)+", section)
    assert table is not None, heading
    rows = [line.strip("|").split("|") for line in table.group(0).strip().splitlines()]
    return [[cell.strip().strip("`") for cell in row] for row in rows[2:]]


def test_every_http_error_code_is_in_the_table_and_back() -> None:
    documented = {(int(s), code) for s, code, _when in table_rows("API.md", "## Error codes")}
    assert documented == http_codes_in_code()


def test_every_frame_error_code_is_in_the_table_and_back() -> None:
    rows = table_rows("PROTOCOL.md", "Error codes (")
    assert {code for code, _when in rows} == frame_codes_in_code()
