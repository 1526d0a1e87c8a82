"""docs/architecture.md cannot drift from the tree (pure, no server): every test it
cites exists, every module of the package has a row in its module map (and every row
names a module that exists), and every invariant says where it is enforced and names
at least one test."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

pytestmark = pytest.mark.pure

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PACKAGE = ROOT / "langgraph_dualsaver"

CITATION = re.compile(r"(tests/[\w/]+\.py)::(\w+)")
INVARIANT = re.compile(r"^(\d+)\. ")


def section(text: str, title: str) -> str:
    """The body of the ``## <title>`` section, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/architecture.md has no '## {title}' section"
    return match.group(1)


def module_rows(text: str) -> list[str]:
    """The first cell of every table row in the module map: `redis.py`, `cli/`, ..."""
    rows = []
    for line in section(text, "1. Module map").splitlines():
        cell = re.match(r"^\| `([^`]+)` \|", line)
        if cell:
            rows.append(cell.group(1))
    return rows


def package_modules() -> tuple[set[str], set[str]]:
    """The package's top-level modules (``records.py``) and subpackages (``hot/``)."""
    modules = {path.name for path in PACKAGE.glob("*.py")}
    subpackages = {f"{path.parent.name}/" for path in PACKAGE.glob("*/__init__.py")}
    return modules, subpackages


@cache
def defined_tests(relative: str) -> frozenset[str]:
    """The test functions a test file defines, at module level or in a class."""
    tree = ast.parse((ROOT / relative).read_text(encoding="utf-8"))
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name.startswith("test")
    )


def invariants(text: str) -> list[tuple[int, str]]:
    """The numbered items of the invariants section, each with its whole text."""
    items: list[tuple[int, str]] = []
    for line in section(text, "3. Invariants").splitlines():
        number = INVARIANT.match(line)
        if number:
            items.append((int(number.group(1)), line))
        elif items and line.startswith("   "):  # a continuation of the item
            items[-1] = (items[-1][0], items[-1][1] + " " + line.strip())
    return items


def missing_citations(text: str) -> list[str]:
    missing = []
    for path, name in CITATION.findall(text):
        if not (ROOT / path).is_file():
            missing.append(f"{path}::{name} (no such file)")
        elif name not in defined_tests(path):
            missing.append(f"{path}::{name} (no such test in {path})")
    return sorted(set(missing))


def test_every_cited_test_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert CITATION.search(text), "the document cites no test at all"
    assert missing_citations(text) == []


def test_a_cited_test_that_does_not_exist_is_caught() -> None:
    text = "Tests: `tests/test_keys.py::test_no_such_thing`, `tests/no_such_file.py::test_x`."
    assert missing_citations(text) == [
        "tests/no_such_file.py::test_x (no such file)",
        "tests/test_keys.py::test_no_such_thing (no such test in tests/test_keys.py)",
    ]


def test_every_module_of_the_package_has_a_row_in_the_module_map() -> None:
    rows = module_rows(DOC.read_text(encoding="utf-8"))
    modules, subpackages = package_modules()
    listed = set(rows)
    missing = sorted(m for m in modules if m not in listed)
    for sub in sorted(subpackages):  # documented as a whole, or module by module
        if sub not in listed:
            found = (PACKAGE / sub).glob("*.py")
            parts = {f"{sub}{p.name}" for p in found if p.name != "__init__.py"}
            missing += sorted(parts - listed)
    assert missing == [], f"modules missing from the module map: {missing}"


def test_every_row_of_the_module_map_names_a_module_that_exists() -> None:
    rows = module_rows(DOC.read_text(encoding="utf-8"))
    assert len(rows) == len(set(rows)), "a module has two rows"
    stale = [row for row in rows if not (PACKAGE / row).exists()]
    assert stale == [], f"rows naming no module of langgraph_dualsaver/: {stale}"


def test_every_invariant_says_where_it_is_enforced_and_names_its_test() -> None:
    items = invariants(DOC.read_text(encoding="utf-8"))
    assert items, "the invariants section lists nothing"
    assert [number for number, _ in items] == list(range(1, len(items) + 1))
    untested = [n for n, item in items if "Tests:" not in item or not CITATION.search(item)]
    unplaced = [n for n, item in items if "Where:" not in item]
    assert (untested, unplaced) == ([], [])


def test_every_data_flow_is_a_sequence_diagram() -> None:
    flows = section(DOC.read_text(encoding="utf-8"), "2. Data flow")
    diagrams = re.findall(r"```mermaid\n(.*?)```", flows, re.S)
    assert len(diagrams) >= 7
    assert all(diagram.startswith("sequenceDiagram\n") for diagram in diagrams)
