"""The layering, read from the source: every import statement of the four packages (function-level ones
included), parsed with `ast`, so a lazy import cannot hide an arrow.

theory (numpy/scipy/pandas only) <- budget_planner; reference (torch lives here); tuning knows reference
only through `tuning/reference_arms.py`. No import circles, no private names taken from another module
(imported, or reached as `module._name`), no public name defined twice with two meanings, and no public
function or class that only the tests call.
"""

import ast
import json
import tomllib
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


def _import_base(node: ast.ImportFrom, package: str) -> str:
    """The module a `from ... import` reads from, relative imports resolved against `package`."""
    base = node.module or ""
    if node.level:
        up = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*up, base] if base else up)
    return base


def _imports(name: str, path: Path) -> list[tuple[str, str | None]]:
    """(module, imported name or None) for every import in the file, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _import_base(node, package)
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub, None) if sub in MODULES else (base, a.name))
    return out


def _bindings(tree: ast.AST, package: str) -> dict[str, tuple[str, str | None]]:
    """Local name -> (module, None) for a name an import binds to a project module, or (module, name)
    for one it binds to a name defined in (or re-exported by) a project module."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    out[a.asname] = (a.name, None)
                else:  # `import a.b.c` binds `a`; `a.b.c.x` is read through attributes
                    out[a.name.split(".")[0]] = (a.name.split(".")[0], None)
        elif isinstance(node, ast.ImportFrom):
            base = _import_base(node, package)
            for a in node.names:
                sub = f"{base}.{a.name}"
                out[a.asname or a.name] = (sub, None) if sub in MODULES else (base, a.name)
    return {k: v for k, v in out.items() if _top(v[0]) in PACKAGES}


def _dotted(node: ast.AST) -> str | None:
    """'a.b.c' for the expression a.b.c made of names and attributes, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def _module_of(expr: ast.AST, bindings: dict) -> str | None:
    """The project module an expression such as `irt` or `theory.irt` names, if it names one."""
    dotted = _dotted(expr)
    if dotted is None:
        return None
    head, _, rest = dotted.partition(".")
    mod, attr = bindings.get(head, (None, None))
    if mod is None or attr is not None:
        return None
    full = f"{mod}.{rest}" if rest else mod
    return full if full in MODULES else None


def private_reach_ins(name: str, source: str, package: str | None = None) -> set[tuple[str, str, str]]:
    """(module, other module, name) for every `other._name` in `source`: a private attribute (one
    leading underscore, not a dunder) read from another project module through an import binding."""
    tree = ast.parse(source)
    bindings = _bindings(tree, name.rpartition(".")[0] if package is None else package)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            mod = _module_of(node.value, bindings)
            if mod is not None and mod != name:
                found.add((name, mod, node.attr))
    return found


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


def test_no_private_attribute_read_from_another_module():
    found = set()
    for name, path in MODULES.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found |= private_reach_ins(name, path.read_text(encoding="utf-8"), package)
    assert not found, f"private names read across modules (make them public where they live): {sorted(found)}"


def test_the_private_attribute_check_catches_a_planted_reach_in():
    planted = (
        "import theory.fitting\n"
        "import theory.dynamics as dyn\n"
        "from theory import irt\n"
        "from . import presets\n"
        "def f(self, other):\n"
        "    from budget_planner import nextstep\n"
        "    a = irt._W_K, theory.fitting._CACHE, dyn._compose, presets._SCENARIOS, nextstep._perturbation\n"
        "    b = self._x, other._y, irt.__name__, irt.sigmoid_K  # not a module read / not private\n"
    )
    assert private_reach_ins("budget_planner.planted", planted) == {
        ("budget_planner.planted", "theory.irt", "_W_K"),
        ("budget_planner.planted", "theory.fitting", "_CACHE"),
        ("budget_planner.planted", "theory.dynamics", "_compose"),
        ("budget_planner.planted", "budget_planner.presets", "_SCENARIOS"),
        ("budget_planner.planted", "budget_planner.nextstep", "_perturbation"),
    }
    # a module reading its own private names is fine
    assert not private_reach_ins("theory.irt", "from theory import irt\nx = irt._W_K\n")


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


# ---- dead code: public functions and classes that nothing outside tests/ calls ------------------------
# Callers: the four packages, scripts/, benchmarks/, notebooks/ (build.py and the notebooks' code cells)
# and the console scripts of pyproject.toml. A name an __init__ re-exports counts only where it is used.
ENTRY_POINTS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]

# Public names kept with no caller outside tests/, each for a stated reason (at most 5).
NO_CALLER_OK = {
    # the check of `plan --next` on simulated worlds: a study that tests/test_planner_voi.py runs and
    # docs/theory.md reports (section "which measurement next"), no command of its own
    ("budget_planner.nextstep", "simulate_worlds"),
    # writes a tiny random Qwen3 checkpoint directory (weights, config, chat tokenizer) that the tests load
    # through the real loading path (models.load_causal_lm); no weights can be downloaded here
    ("reference.models", "build_tiny_qwen3_dir"),
    # a seeded synthetic matched-tuning study (no training) for the harness and notebook-02 tests
    ("tuning.testing", "synthetic_study"),
}


def _caller_sources() -> dict[str, tuple[str, str]]:
    """Module name -> (its package for relative imports, source) of every file that may call a public name."""
    out = {name: (name if path.name == "__init__.py" else name.rpartition(".")[0], path.read_text(encoding="utf-8"))
           for name, path in MODULES.items()}
    for folder in ("scripts", "benchmarks", "notebooks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            out[f"{folder}:{path.relative_to(ROOT / folder)}"] = ("", path.read_text(encoding="utf-8"))
        for path in sorted((ROOT / folder).rglob("*.ipynb")):  # its code cells, in order, as one file
            cells = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
            lines = [ln for c in cells for ln in "".join(c["source"]).splitlines()]
            out[f"{folder}:{path.name}"] = ("", "\n".join(ln for ln in lines if not ln.lstrip().startswith(("%", "!"))))
    return out


def _reexports() -> dict[tuple[str, str], tuple[str, str]]:
    """(package, name) -> (module, name) for every name a package __init__ imports from a submodule."""
    out = {}
    for name, path in MODULES.items():
        if path.name == "__init__.py":
            for local, (mod, attr) in _bindings(ast.parse(path.read_text(encoding="utf-8")), name).items():
                if attr is not None:
                    out[(name, local)] = (mod, attr)
    return out


def _uses(name: str, package: str, source: str, reexports: dict) -> set[tuple[str, str]]:
    """(module, public name) of every project definition the source reads: through an import binding,
    as `module.name`, `getattr(module, "name")`, a 'module:name' string, or by name in its own module.
    An __init__'s own re-exports are not uses."""
    tree = ast.parse(source)
    bindings = _bindings(tree, package)
    # a module named in a string is imported by name (importlib): every attribute read here may be its
    by_name = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in MODULES}
    out = set()

    def add(mod: str, attr: str) -> None:
        while (mod, attr) in reexports:
            mod, attr = reexports[(mod, attr)]
        out.add((mod, attr))

    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            mod, attr = bindings.get(node.id, (None, None))
            if mod is not None and attr is not None:
                add(mod, attr)
            elif name in MODULES:
                add(name, node.id)
        elif isinstance(node, ast.Attribute):
            mod = _module_of(node.value, bindings)
            for m in ({mod} if mod is not None else by_name):
                add(m, node.attr)
        elif isinstance(node, ast.Call) and _dotted(node.func) == "getattr" and len(node.args) >= 2:
            mod, key = _module_of(node.args[0], bindings), node.args[1]
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                for m in ({mod} if mod is not None else by_name):
                    add(m, key.value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and ":" in node.value:
            mod, _, attr = node.value.partition(":")
            if mod in MODULES and attr.isidentifier():
                add(mod, attr)
    return out


def public_definitions() -> set[tuple[str, str]]:
    """(module, name) of every public module-level function and class of the four packages."""
    out = set()
    for mod, path in MODULES.items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            defines = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if defines and not node.name.startswith("_"):
                out.add((mod, node.name))
    return out


def uncalled(definitions: set, sources: dict) -> set[tuple[str, str]]:
    """The definitions no source uses (a definition's own `def` line is not a use of it)."""
    reexports = _reexports()
    used = {(mod, attr) for mod, _, attr in (ep.partition(":") for ep in ENTRY_POINTS.values())}
    for name, (package, source) in sources.items():
        used |= _uses(name, package, source, reexports)
    return definitions - used


def test_every_public_function_and_class_has_a_caller_outside_tests():
    assert len(NO_CALLER_OK) <= 5, "the allow-list is for a few deliberate exceptions"
    dead = uncalled(public_definitions(), _caller_sources())
    assert dead <= set(NO_CALLER_OK), (
        "public names that only tests call (delete them, or make them the code that runs): "
        f"{sorted(dead - set(NO_CALLER_OK))}")
    assert set(NO_CALLER_OK) <= dead, f"allow-list entries that now have callers: {sorted(set(NO_CALLER_OK) - dead)}"


def test_the_dead_code_check_sees_callers_and_their_absence():
    defs = {("theory.irt", "solve_theta"), ("theory.irt", "sigmoid_K"), ("budget_planner.planner", "plan"),
            ("budget_planner.cli", "main")}
    sources = {"scripts:x.py": ("", "from budget_planner import plan\nplan('paper-qwen3-math')\n")}
    # plan through the package's re-export, main through the console script; irt's names unused here
    assert uncalled(defs, sources) == {("theory.irt", "solve_theta"), ("theory.irt", "sigmoid_K")}
    sources["notebooks:y.ipynb"] = ("", "from theory import irt\nirt.solve_theta(0.5, 1.0)\n")
    sources["scripts:z.py"] = ("", "import theory.irt as t\nf = getattr(t, 'sigmoid_K')\n")
    assert uncalled(defs, sources) == set()
