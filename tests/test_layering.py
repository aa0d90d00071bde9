"""The layering rules of ../shared/ARCHITECTURE.md, held as a test.

Every module under zoo/ and datamodules/ is mapped to a layer by LAYER_MAP; each import it makes
(anywhere in the file: module level, inside functions, if- and try-blocks) must point to a layer
it may import, no imports may close a cycle, and every module must be placed in a layer. Also,
benchmarks/*.py import what they measure, never a command module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

# Module -> layer. A key ending in "*" places that module and everything below it; a plain key
# places exactly that module. The longest matching key wins.
LAYER_MAP: dict[str, str] = {
    "zoo": "api",  # the package facade, zoo/__init__.py, only
    "zoo.errors": "base",
    "zoo.files": "base",
    "zoo.classpath": "base",
    "zoo.checkpoint": "base",
    "zoo.threads": "base",
    "zoo.cores*": "maths",
    "zoo.bptt": "maths",
    "zoo.layers": "maths",
    "zoo.decoding*": "maths",
    "zoo.metrics": "maths",
    "zoo.plots": "maths",
    "zoo.runlog": "maths",
    "zoo.schedules": "maths",
    "zoo.diagnostics": "maths",
    "datamodules*": "data",
    "zoo.models*": "models",
    "zoo.published": "published",
    "zoo.hub": "published",
    "zoo.predict*": "predict",
    "zoo.tasks*": "tasks",
    "zoo.callbacks": "tasks",
    "zoo.cli*": "commands",
}

_BELOW_TASKS = {"base", "maths", "data", "models", "published", "predict", "api"}
MAY_IMPORT: dict[str, set[str]] = {
    "base": {"base"},
    "maths": {"base", "maths"},
    "data": {"base", "data"},
    "models": {"base", "maths", "models"},
    "published": {"base", "published"},
    "predict": {"base", "maths", "data", "models", "published", "predict"},
    "api": _BELOW_TASKS,
    "tasks": _BELOW_TASKS | {"tasks"},
    "commands": _BELOW_TASKS | {"tasks", "commands"},
}

PROJECT_PACKAGES = ("zoo", "datamodules")

Edge = tuple[str, int, str]  # (importing module, line, imported module)


def layer_of(module: str) -> str | None:
    """The layer LAYER_MAP gives `module`, or None if it places it nowhere."""
    best: tuple[int, str] | None = None
    for key, layer in LAYER_MAP.items():
        stem = key.rstrip("*")
        tree = key.endswith("*")
        if module == stem or (tree and module.startswith(stem + ".")):
            if best is None or len(stem) > best[0]:
                best = (len(stem), layer)
    return best[1] if best else None


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(root: Path, module: str) -> bool:
    base = root.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(root: Path, path: Path, messages: list[str]) -> list[tuple[int, str]]:
    """(line, module) for every project import anywhere in the file, resolved as a module.

    A file that does not parse adds a message to `messages` and yields no imports."""
    rel = path.relative_to(root).as_posix()
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    except (SyntaxError, UnicodeDecodeError) as error:
        messages.append(f"{rel}: cannot be parsed ({error})")
        return []
    module = module_name(root, path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[tuple[int, str]] = set()  # `from m import a, b` is one import of m
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                if node.level - 1 > len(parts):
                    continue
                parts = parts[: len(parts) - node.level + 1] + ([base] if base else [])
                base = ".".join(parts)
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                is_module = alias.name != "*" and _is_module(root, candidate)
                found.add((node.lineno, candidate if is_module else base))
    return sorted((line, m) for line, m in found if m.split(".")[0] in PROJECT_PACKAGES)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, by iterative DFS reachability."""
    reach: dict[str, set[str]] = {}
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(graph[node])
        reach[start] = seen
    components = {
        tuple(sorted({n} | {m for m in reach[n] if n in reach[m]})) for n in graph if n in reach[n]
    }
    return sorted(list(c) for c in components if len(c) > 1)


def check_layering(root: Path) -> list[str]:
    """Every breach of ARCHITECTURE.md's layering under `root`, one message each."""
    messages: list[str] = []
    files: dict[str, str] = {}  # module -> repo-relative path
    edges: list[Edge] = []
    for package in PROJECT_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module, rel = module_name(root, path), path.relative_to(root).as_posix()
            files[module] = rel
            if layer_of(module) is None:
                messages.append(f"{rel}: {module} is not placed in a layer; add it to the map")
            edges += [(module, line, target) for line, target in imports_of(root, path, messages)]
    for source, line, target in edges:
        src_layer, dst_layer = layer_of(source), layer_of(target)
        if src_layer is None or target == source:
            continue
        if dst_layer is None:
            if target not in files:
                messages.append(f"{files[source]}:{line} imports {target}, not a module here")
        elif dst_layer not in MAY_IMPORT[src_layer]:
            messages.append(
                f"{files[source]}:{line} imports {target} ({src_layer} may not import {dst_layer})"
            )
    graph: dict[str, set[str]] = {module: set() for module in files}
    for source, _, target in edges:
        if target in files and target != source:
            graph[source].add(target)
    for component in _cycles(graph):
        closing = [
            f"    {files[s]}:{line} imports {t}"
            for s, line, t in edges
            if s in component and t in component and s != t
        ]
        names = ", ".join(files[m] for m in component)
        messages.append(f"import cycle among {names}:\n" + "\n".join(closing))
    return messages


def check_benchmarks(root: Path) -> list[str]:
    """benchmarks/*.py import what they measure, never a command module."""
    messages: list[str] = []
    for path in sorted((root / "benchmarks").glob("*.py")):
        rel = path.relative_to(root).as_posix()
        messages += [
            f"{rel}:{line} imports {target} (benchmarks may not import commands)"
            for line, target in imports_of(root, path, messages)
            if layer_of(target) == "commands"
        ]
    return messages


def _fail_on(messages: list[str]) -> None:
    if messages:
        header = f"{len(messages)} breach(es) of ARCHITECTURE.md's layering:\n"
        pytest.fail(header + "\n".join(messages), pytrace=False)


def _fake_repo(root: Path, files: dict[str, str]) -> None:
    """Write `files` (path -> text) under `root`, with a facade zoo/__init__.py and zoo/errors.py."""
    for rel, text in {"zoo/__init__.py": "", "zoo/errors.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


REPO = Path(__file__).parents[1]


def test_repo_layering() -> None:
    _fail_on(check_layering(REPO))


def test_checker_catches_upward_import(tmp_path: Path) -> None:
    _fake_repo(
        tmp_path,
        {
            "zoo/models/__init__.py": "",
            "zoo/models/m.py": "def f():\n    from zoo.predict.p import g\n",
            "zoo/predict/__init__.py": "",
            "zoo/predict/p.py": "def g():\n    pass\n",
        },
    )
    messages = check_layering(tmp_path)
    assert messages == ["zoo/models/m.py:2 imports zoo.predict.p (models may not import predict)"]


def test_checker_catches_cycle(tmp_path: Path) -> None:
    cores, layers = "from zoo import layers\n", "def f():\n    from zoo.cores import x\n"
    _fake_repo(tmp_path, {"zoo/cores.py": cores, "zoo/layers.py": layers})
    messages = check_layering(tmp_path)
    assert len(messages) == 1, messages
    assert messages[0].startswith("import cycle among zoo/cores.py, zoo/layers.py:")
    assert "zoo/cores.py:1 imports zoo.layers" in messages[0]
    assert "zoo/layers.py:2 imports zoo.cores" in messages[0]


def test_checker_catches_data_importing_maths(tmp_path: Path) -> None:
    guarded = "import zoo.errors\ntry:\n    import zoo.cores\nexcept ImportError:\n    pass\n"
    _fake_repo(
        tmp_path, {"zoo/cores.py": "", "datamodules/__init__.py": "", "datamodules/x.py": guarded}
    )
    messages = check_layering(tmp_path)
    assert messages == ["datamodules/x.py:3 imports zoo.cores (data may not import maths)"]


def test_checker_resolves_relative_imports(tmp_path: Path) -> None:
    _fake_repo(
        tmp_path,
        {
            "zoo/models/__init__.py": "from . import m\n",
            "zoo/models/m.py": "from .n import N\n",
            "zoo/models/n.py": "if True:\n    from ..tasks.t import T\n",
            "zoo/tasks/__init__.py": "",
            "zoo/tasks/t.py": "",
        },
    )
    messages = check_layering(tmp_path)
    assert messages == ["zoo/models/n.py:2 imports zoo.tasks.t (models may not import tasks)"]


def test_checker_catches_unplaced_module(tmp_path: Path) -> None:
    _fake_repo(tmp_path, {"zoo/stray.py": "from zoo.errors import E\n"})
    messages = check_layering(tmp_path)
    assert messages == ["zoo/stray.py: zoo.stray is not placed in a layer; add it to the map"]


def test_benchmarks_do_not_import_commands(tmp_path: Path) -> None:
    _fake_repo(
        tmp_path,
        {
            "zoo/cli/__init__.py": "",
            "zoo/cli/train.py": "",
            "zoo/cores.py": "",
            "benchmarks/ok.py": "from zoo.cores import LSTM\n",
            "benchmarks/bad.py": "def run():\n    from zoo.cli import train\n",
        },
    )
    assert check_benchmarks(tmp_path) == [
        "benchmarks/bad.py:2 imports zoo.cli.train (benchmarks may not import commands)"
    ]
    if (REPO / "benchmarks").is_dir():
        _fail_on(check_benchmarks(REPO))
