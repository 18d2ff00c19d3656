"""The layout's import rules (docs/architecture.md), read from the source: no package cycles, the
trainer never imports probes, reports, sweeps, the ladder or a concrete task, and the science and
storage stay at the bottom. Imports under ``if TYPE_CHECKING:`` (annotations only) do not count."""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "arprobe"


def imports() -> dict[str, set[tuple[str, str]]]:
    """{package or top-level module: {(imported arprobe module, where)}}."""
    out: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        if parts[-1] == "__main__.py":  # `python -m arprobe` calls the CLI: the one edge upwards
            continue
        owner = parts[0] if len(parts) > 1 else parts[0][:-3]
        tree = ast.parse(path.read_text())
        annotations_only = {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and getattr(block.test, "id", "") == "TYPE_CHECKING"
            for node in ast.walk(block)
        }
        for node in ast.walk(tree):
            if id(node) in annotations_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "arprobe":
                names = (
                    [node.module] if node.module != "arprobe" else [f"arprobe.{a.name}" for a in node.names]
                )
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == "arprobe"]
            else:
                continue
            for name in names:
                out[owner].add((name, f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"))
    return out


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "arprobe"


@pytest.fixture(scope="module")
def graph():
    edges = {owner: {package_of(m) for m, _ in found} - {owner} for owner, found in imports().items()}
    return edges


def test_no_package_imports_another_that_imports_it_back(graph):
    def reaches(start, goal, seen=()):
        return any(
            n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph.get(start, ())
        )

    cycles = sorted(p for p in graph if reaches(p, p))
    assert cycles == [], f"packages on an import cycle: {cycles}"


@pytest.mark.parametrize(
    "package, allowed",
    [
        ("science", {"errors", "values"}),
        ("storage", {"errors", "values", "science", "__version__"}),
        ("models", {"errors", "values", "science", "storage"}),
        ("trainer", {"errors", "values", "science", "storage", "models", "tasks", "registry", "jsonio"}),
        ("report", {"errors", "values", "science", "storage", "jsonio", "trainer", "__version__"}),
    ],
)
def test_a_package_imports_only_what_lies_below_it(package, allowed):
    found = {(package_of(m), where) for m, where in imports()[package]}
    above = sorted(where for p, where in found if p not in allowed | {package})
    assert above == [], f"{package} imports from above it: {above}"


def test_the_trainer_knows_tasks_only_through_their_interface_and_registry():
    tasks = sorted((m, where) for m, where in imports()["trainer"] if package_of(m) == "tasks")
    concrete = [(m, where) for m, where in tasks if m not in ("arprobe.tasks.base", "arprobe.tasks.registry")]
    assert tasks and concrete == [], concrete


def test_no_code_outside_a_task_tests_a_task_name():
    """The built-in task names appear outside tasks/ only in config defaults and help text."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "tasks":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if any(
                f'== "{n}"' in code or f'!= "{n}"' in code
                for n in ("text-lm", "image-lm", "image-classification")
            ):
                offenders.append(f"{rel}:{i}")
            if "cfg.task in (" in code or "cfg.task not in (" in code:
                offenders.append(f"{rel}:{i}")
    assert offenders == []
