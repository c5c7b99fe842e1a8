"""The architecture, checked: `jobs/` imports no `api`, has no import circle and dodges none
inside a function; the engine imports no domain; arq is imported by its adapter alone; the
API names no Redis key; every Lua script takes its keys through KEYS, as its wrapper says."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from jobs.analyses import COUNT_USAGE
from jobs.analysis_batches.state import RECORD
from jobs.engine.scripts import ENGINE_SCRIPTS, LuaScript
from jobs.webhooks.endpoints import ENDPOINT_HEALTH

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS: list[LuaScript] = [*ENGINE_SCRIPTS, COUNT_USAGE, ENDPOINT_HEALTH, RECORD]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(folder: str) -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / folder).rglob("*.py"))}


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def runtime_imports(path: Path) -> tuple[set[str], list[str]]:
    """The modules `path` imports when it runs (not under TYPE_CHECKING), and the imports it
    makes inside functions."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    nested: list[str] = []
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]

    def names(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            base = ".".join([*anchor[: len(anchor) - node.level + 1], *([base] if base else [])])
        # `from package import module` depends on the module; `from module import name`
        # on the module.
        submodules = [f"{base}.{alias.name}" for alias in node.names]
        found_modules = [m for m in submodules if _is_module(m)]
        return found_modules if len(found_modules) == len(submodules) else [base, *found_modules]

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                if in_function:
                    nested.extend(names(child))
                else:
                    found.update(names(child))
                continue
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            visit(child, inner)

    visit(tree, False)
    return found, nested


def graph(folder: str) -> dict[str, set[str]]:
    known = modules(folder)
    edges = {}
    for name, path in known.items():
        imported, _ = runtime_imports(path)
        edges[name] = {m for m in imported if m in known and m != name}
    return edges


def test_jobs_never_imports_api_nor_dodges_an_import_inside_a_function():
    for name, path in modules("jobs").items():
        imported, nested = runtime_imports(path)
        assert not any(m == "api" or m.startswith("api.") for m in imported), name
        assert nested == [], f"{name} imports inside a function: {nested}"


def test_jobs_has_no_import_circle():
    edges = graph("jobs")
    state: dict[str, str] = {}
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycle = [*path[path.index(nxt) :], nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            walk(node)


def test_the_engine_imports_no_domain():
    domains = {"jobs.documents", "jobs.analyses", "jobs.exports", "jobs.webhooks", "jobs.canaries",
               "jobs.claude", "jobs.domains", "jobs.worker"}  # fmt: skip
    for name, path in modules("jobs/engine").items():
        imported, _ = runtime_imports(path)
        leaked = {m for m in imported if any(m == d or m.startswith(d + ".") for d in domains)}
        assert not leaked, f"{name} imports {leaked}"


def test_arq_is_imported_by_its_adapter_alone():
    for folder in ("jobs", "api"):
        for name, path in modules(folder).items():
            imported, _ = runtime_imports(path)
            uses_arq = any(m == "arq" or m.startswith("arq.") for m in imported)
            assert uses_arq == (name == "jobs.engine.arq_adapter"), name


def test_the_api_names_no_redis_key():
    key_literal = re.compile(r"""["'](lr|arq):[\w{]""")
    for name, path in modules("api").items():
        assert not key_literal.search(path.read_text()), f"{name} names a Redis key"


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_each_lua_script_takes_what_its_wrapper_names_and_every_key_through_keys(script):
    assert script.header() == script.fields()
    body = "\n".join(
        line for line in script.source.splitlines() if not line.lstrip().startswith("--")
    )
    # No key is built inside a script: no key-like literal, no concatenation into a call.
    assert not re.search(r"""['"](lr|arq):""", body), "a key literal in the script"
    declared = script.header()["KEYS"]
    spread = declared and declared[-1].startswith("*")
    for index in (int(i) for i in re.findall(r"KEYS\[(\d+)\]", body)):
        assert spread or index <= len(declared), f"KEYS[{index}] is not in the header"
