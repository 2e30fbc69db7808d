"""The layering, read from the source: every import statement of the four packages (function-level ones
included), parsed with `ast`, so a lazy import cannot hide an arrow.

theory (numpy/scipy/pandas only) <- budget_planner; reference (torch lives here); tuning knows reference
only through `tuning/reference_arms.py`. No import circles, no private names taken from another module,
and no public name defined twice with two meanings.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("theory", "budget_planner", "reference", "tuning")  # pyproject: [tool.setuptools.packages.find]



def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str | None]]:
    """(module, imported name or None) for every import in the file, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub, None) if sub in MODULES else (base, a.name))
    return out


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _edges(name: str) -> set[str]:
    """Package modules `name` depends on (importing `a.b.c` also runs `a` and `a.b`)."""
    out = set()
    for mod, _ in IMPORTS[name]:
        parts = mod.split(".")
        out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & MODULES.keys()
    return out - {name}


def _top(mod: str) -> str:
    return mod.split(".")[0]


def test_the_scan_sees_every_package():
    assert {_top(m) for m in MODULES} == set(PACKAGES)
    assert "theory.scenario" in MODULES and "tuning.reference_arms" in MODULES


def test_no_import_cycle():
    # A package's __init__ re-exporting its children is not a circle: drop edges into one's own
    # package __init__ (`from theory.arms import X` runs theory/__init__ first, which is by design).
    graph = {m: {d for d in _edges(m) if not m.startswith(d + ".")} for m in MODULES}
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append(" -> ".join([*stack[stack.index(d):], d]))
            elif d not in state:
                visit(d, [*stack, d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_theory_is_torch_free_and_depends_on_no_other_package():
    bad = [(m, mod) for m in MODULES if _top(m) == "theory" for mod, _ in IMPORTS[m]
           if _top(mod) in {"torch", "reference", "tuning", "budget_planner"}]
    assert not bad


def test_reference_never_imports_tuning():
    bad = [(m, mod) for m in MODULES if _top(m) == "reference" for mod, _ in IMPORTS[m] if _top(mod) == "tuning"]
    assert not bad


def test_tuning_reaches_reference_only_through_reference_arms():
    bad = [(m, mod) for m in MODULES if _top(m) == "tuning" and m != "tuning.reference_arms"
           for mod, _ in IMPORTS[m] if _top(mod) == "reference"]
    assert not bad


def test_budget_planner_imports_neither_reference_nor_tuning():
    bad = [(m, mod) for m in MODULES if _top(m) == "budget_planner" for mod, _ in IMPORTS[m]
           if _top(mod) in {"torch", "reference", "tuning"}]
    assert not bad


def test_no_private_name_imported_from_another_module():
    found = {(m, mod, n) for m in MODULES for mod, n in IMPORTS[m]
             if n and n.startswith("_") and not n.startswith("__") and mod != m}
    assert not found, f"private imports across modules: {sorted(found)}"


# Public top-level names defined in more than one module on purpose: each entry is one concept.
SAME_CONCEPT = {
    # each package's command line: `<pkg>.cli.main` is its console script, `build_parser` its parser
    "main": {"budget_planner.cli", "reference.cli", "tuning.cli"},
    "build_parser": {"budget_planner.cli", "reference.cli", "tuning.cli"},
    # the paper's GRPO stage, once as the theory's closed form and once as the stage the reference runs
    "grpo": {"theory.dynamics", "reference.stages"},
}


def test_one_public_name_means_one_thing():
    """No two modules define a public top-level class or function of the same name (a reader who meets
    `World` or `evaluate` should not have to ask which one), SAME_CONCEPT aside."""
    where: dict[str, set[str]] = {}
    for mod, path in MODULES.items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            defines = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if defines and not node.name.startswith("_"):
                where.setdefault(node.name, set()).add(mod)
    clashes = {n: sorted(mods) for n, mods in where.items() if len(mods) > 1 and SAME_CONCEPT.get(n) != mods}
    assert not clashes, f"one name, several meanings (rename one, or list a deliberate pair in SAME_CONCEPT): {clashes}"
    stale = {name for name, mods in SAME_CONCEPT.items() if where.get(name) != mods}
    assert not stale, f"SAME_CONCEPT entries that no longer match the code: {sorted(stale)}"
