"""The layout's rules, read from the source with `ast` (nothing is imported):

- imports point one way: costmodel <- sim <- planner (the algorithm) <- planner.cli and
  planner.service (the interfaces); validate sits beside the algorithm, importing costmodel and
  sim and never planner. Function-level (lazy) imports count too: a lazy import that points up
  is still a cycle, only a hidden one.
- planning and simulation never import torch or triton, and the interfaces import validate
  (which does) only inside the commands that need it, never at module level (checked at run
  time too: `import planner.cli` loads neither torch nor numpy);
- no import cycle between modules (lazy imports included), and no module `__getattr__` outside
  a package's `__init__.py` (a module that re-exports another's names lazily hides a cycle);
- no module over 500 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("costmodel", "sim", "planner", "validate")
INTERFACES = ("planner.cli", "planner.service")
HEAVY = ("torch", "triton")
MAX_LINES = 500


def layer(module: str) -> tuple[int, str]:
    """(height, name) of a project module: a module may import only its own height or lower."""
    top = module.split(".")[0]
    if top == "costmodel":
        return 0, "costmodel"
    if top == "sim":
        return 1, "sim"
    if top == "validate":
        return 2, "validate"
    if any(module == i or module.startswith(i + ".") for i in INTERFACES):
        return 3, "interfaces"
    return 2, "planner"


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = modules()


def _resolve(module: str, node: ast.ImportFrom | ast.Import, path: Path) -> list[str]:
    """The project modules (or other top-level names) one import statement loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative: from the importing module's package
        pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        pkg = pkg[:len(pkg) - node.level + 1]
        base = ".".join(pkg + ([base] if base else []))
    out = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        out.append(sub if sub in MODULES else base)
    return out


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import in `module`, lazy ones too;
    imports under `if TYPE_CHECKING:` never run and are left out."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    out = []

    def walk(node, top: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.extend((m, child.lineno, top) for m in _resolve(module, child, path))
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            walk(child, top and not nested)

    walk(tree, True)
    return out


def points_wrong(source: str, target: str) -> bool:
    """Whether `source` importing `target` breaks the direction (project modules only)."""
    if target.split(".")[0] not in PACKAGES:
        return False
    (h, where), (th, there) = layer(source), layer(target)
    return th > h or (where == "validate" and there in ("planner", "interfaces")) or (
        where == "planner" and there == "validate")


def test_imports_point_one_way():
    wrong = [f"{MODULES[mod].relative_to(REPO)}:{line} ({layer(mod)[1]}) imports {target} "
             f"({layer(target)[1]})"
             for mod in MODULES for target, line, _ in imports(mod) if points_wrong(mod, target)]
    assert not wrong, "imports pointing the wrong way:\n" + "\n".join(wrong)


def test_planning_and_simulation_never_load_torch():
    wrong = [f"{MODULES[m].relative_to(REPO)}:{line} imports {t}"
             for m in MODULES if layer(m)[1] != "validate"
             for t, line, top in imports(m)
             if t.split(".")[0] in HEAVY
             or (t.split(".")[0] == "validate" and (top or layer(m)[1] != "interfaces"))]
    assert not wrong, ("torch/triton (or validate, which loads them) imported where planning or "
                       "simulation would load it:\n" + "\n".join(wrong))


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_cycles():
    # lazy imports count: deferring one side of a cycle into a function only hides it. A
    # submodule's import of its own package (the package's exports) is not followed.
    graph = {m: {t for t, _, _ in imports(m) if t in MODULES and not m.startswith(t + ".")}
             for m in MODULES}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_getattr_outside_package_inits():
    wrong = [str(p.relative_to(REPO)) for p in MODULES.values() if p.name != "__init__.py"
             and any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__"
                     for n in ast.parse(p.read_text()).body)]
    assert not wrong, f"module __getattr__ (lazy re-export) in {wrong}"


def test_no_module_over_500_lines():
    long = {str(p.relative_to(REPO)): n for p in MODULES.values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("source, target, bad", [
    ("costmodel.model", "sim.engine", True),
    ("sim.engine", "planner.request", True),
    ("planner.request", "planner.cli.common", True),
    ("validate.runner", "planner.request", True),
    ("planner.planning", "validate.runner", True),
    ("planner.cli.plan", "planner.planning", False),
    ("validate.shapes", "sim.deployment", False),
])
def test_the_layer_rule_itself(source, target, bad):
    """The rule the walk applies, on known pairs (so a broken `layer` cannot pass silently)."""
    assert points_wrong(source, target) is bad


def test_the_cli_starts_without_loading_torch_or_numpy():
    """At run time too: `serveplan` imports every command module at start, and none of them
    may load torch (validate) or even numpy; planning and the service never load torch."""
    import subprocess
    import sys

    code = ("import sys, planner.cli; a = {m for m in ('numpy', 'torch', 'triton', 'validate') "
            "if m in sys.modules}; import planner.planning, planner.service; b = {m for m in "
            "('torch', 'triton', 'validate') if m in sys.modules}; print(sorted(a), sorted(b))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[] []", out
