"""The import structure: floors croc_utils -> models -> (main_croc.py, hubconf.py, eval/, bench/), each importing
only from its own floor or lower, and no circle of imports between files. Read from the sources with ``ast`` (every
import statement counts, including those inside functions and under ``if TYPE_CHECKING``)."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOORS = {"croc_utils": 0, "models": 1, "main_croc": 2, "hubconf": 2, "eval": 2, "bench": 2}


def project_files() -> list[str]:
    """Module names ('croc_utils.step', 'models', 'main_croc', ...) of every Python file of the floors."""
    names = [name for name in ("main_croc", "hubconf") if os.path.isfile(os.path.join(ROOT, f"{name}.py"))]
    for package in ("croc_utils", "models", "eval", "bench"):
        for file in sorted(os.listdir(os.path.join(ROOT, package))):
            if file.endswith(".py"):
                names.append(package if file == "__init__.py" else f"{package}.{file[:-3]}")
    return names


def source_path(module: str) -> str:
    path = os.path.join(ROOT, *module.split("."))
    return os.path.join(path, "__init__.py") if os.path.isdir(path) else path + ".py"


def imported_modules(module: str, known: set[str]) -> set[str]:
    """The project modules ``module`` imports: ``from pkg import name`` means pkg.name when that is a module, else
    pkg; importing pkg.sub also runs pkg/__init__.py (unless pkg is ``module``'s own package, already running)."""
    tree = ast.parse(open(source_path(module)).read(), source_path(module))
    is_package = source_path(module).endswith("__init__.py")
    own_package = module if is_package else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = own_package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    found = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in known and prefix != module and not (prefix == own_package and i < len(parts)):
                found.add(prefix)
    return found


def floor(module: str) -> int:
    return FLOORS[module.split(".")[0]]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} imports {target}" for module, targets in graph.items() for target in targets
                  if floor(target) > floor(module))


def circles(graph: dict[str, set[str]]) -> list[str]:
    """Depth-first search; each back edge closes a circle, reported as the files along it."""
    state, found = {}, []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                found.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = set(project_files())
    return {module: imported_modules(module, known) for module in known}


def test_the_reader_sees_real_imports(graph):
    # guards against a reader that finds nothing (then the tests below would pass vacuously)
    assert "croc_utils.clustering" in graph["croc_utils.step"]
    assert "models.head" in graph["models"] and "croc_utils.architectures" in graph["models.vision_transformer"]
    assert {"models", "models.network"} <= graph["main_croc"]


def test_no_import_from_a_higher_floor(graph):
    assert upward_imports(graph) == []


def test_no_circle_of_imports(graph):
    assert circles(graph) == []


def test_the_checks_report_what_they_should():
    graph = {"croc_utils.a": {"croc_utils.b"}, "croc_utils.b": {"croc_utils.a", "models"}, "models": {"croc_utils.c"},
             "croc_utils.c": set(), "eval.x": {"models", "croc_utils.c"}}
    assert upward_imports(graph) == ["croc_utils.b imports models"]
    assert circles(graph) == ["croc_utils.a -> croc_utils.b -> croc_utils.a"]
    del graph["croc_utils.b"]
    graph["croc_utils.a"] = set()
    assert upward_imports(graph) == [] and circles(graph) == []
