"""The shape of the package, enforced: no import cycle, the library never imports the CLI, every
vocabulary and user error defined in one place, ``import cutmix`` loads only the ops, and no function
or module grows past its size limit beyond today's list (the redesign's remaining work, issue 18)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "cutmix"

FUNCTION_LIMIT = 100  # lines, end_lineno - lineno + 1 of the def
MODULE_LIMIT = 500  # lines of the file

# Today's offenders, and their sizes: none may grow, none may be added, and one brought under its limit
# must leave the list (so that the list is always what remains to be done). None are left (issue 18).
LONG_FUNCTIONS: dict[str, int] = {}
LONG_MODULES: dict[str, int] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_cli(module: str) -> bool:
    """A CLI module: the ``cutmix.cli`` package and every module under it, and the ``python -m`` entry
    points (``__main__``)."""
    return (
        module == "cutmix.cli" or module.startswith("cutmix.cli.") or module.rsplit(".", 1)[-1] == "__main__"
    )


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    module_level: bool  # run when the module is imported (not in a function, not under TYPE_CHECKING)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(source: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The cutmix modules that ``node`` imports (``from cutmix.x import y``: ``cutmix.x.y`` where that
    is a module, else ``cutmix.x``); the parent packages they imply are not counted."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in MODULES]
    base = node.module or ""
    if node.level:
        package = source if MODULES[source].name == "__init__.py" else source.rpartition(".")[0]
        package = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
        base = f"{package}.{base}" if base else package
    found = []
    for alias in node.names:
        if f"{base}.{alias.name}" in MODULES:
            found.append(f"{base}.{alias.name}")
        elif base in MODULES:
            found.append(base)
    return found


def imports_of(module: str) -> list[Import]:
    """Every import of a cutmix module in ``module``, module-level or not."""
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend(
                    Import(module, target, child.lineno, module_level) for target in _resolve(module, child)
                )
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    visit(ast.Module(body=[statement], type_ignores=[]), False)
                for statement in child.orelse:
                    visit(ast.Module(body=[statement], type_ignores=[]), module_level)
            else:  # class bodies, try/if/with at module level run at import time
                visit(child, module_level)

    visit(ast.parse(MODULES[module].read_text(encoding="utf-8")), True)
    return found


IMPORTS = [imp for module in MODULES for imp in imports_of(module)]


def test_the_import_graph_is_read():
    # A sanity check of the parser itself, so that the tests below cannot pass on an empty graph.
    assert {"cutmix", "cutmix.ops", "cutmix.ops.params", "cutmix.training.loop", "cutmix.cli"} <= set(MODULES)
    assert {"cutmix.cli.train", "cutmix.training.config", "cutmix.training.evaluate"} <= set(MODULES)
    module_level = {(i.source, i.target) for i in IMPORTS if i.module_level}
    function_level = {(i.source, i.target) for i in IMPORTS if not i.module_level}
    assert ("cutmix.ops.classes", "cutmix.ops.dense") in module_level
    assert ("cutmix.cli", "cutmix.cli.train") in function_level  # the commands, imported when parsing
    # dense types its op with a Protocol, so it does not import classes at all (one-way layers).
    assert ("cutmix.ops.dense", "cutmix.ops.classes") not in module_level | function_level
    assert ("cutmix.data.datasets", "cutmix.data.cifar") in module_level  # from-import of a module
    assert ("cutmix.ops.apply", "cutmix.ops.rules") in module_level  # `from cutmix.ops import rules`
    # Imports inside functions run once every module has loaded: they close no import cycle, and are
    # how a module uses an optional or heavy one (Matplotlib, the data layer); counted apart.


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph ``edges``, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := dfs(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_modules_at_run_time():
    edges: dict[str, set[str]] = {}
    for imp in IMPORTS:
        if imp.module_level and imp.target != imp.source:
            edges.setdefault(imp.source, set()).add(imp.target)
    cycle = _cycle(edges)
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle or [])


def test_no_library_module_imports_a_cli_module():
    assert is_cli("cutmix.cli") and is_cli("cutmix.cli.train") and is_cli("cutmix.__main__")
    assert not is_cli("cutmix.training.loop") and not is_cli("cutmix.training.evaluate")
    assert not is_cli("cutmix.client")  # a name that merely starts with "cli"
    assert ("cutmix.cli.train", "cutmix.training.loop") in {(i.source, i.target) for i in IMPORTS}
    wrong = [
        f"{imp.source} (line {imp.line}) imports {imp.target}"
        for imp in IMPORTS
        if not is_cli(imp.source) and is_cli(imp.target)
    ]
    assert not wrong, "; ".join(wrong)


def _sizes() -> tuple[dict[str, int], dict[str, int]]:
    functions: dict[str, int] = {}
    modules: dict[str, int] = {}
    for module, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        modules[module] = len(text.splitlines())

        def visit(node: ast.AST, prefix: str, module: str = module) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = prefix + child.name
                    functions[f"{module}:{name}"] = child.end_lineno - child.lineno + 1
                    visit(child, f"{name}.<locals>.")
                elif isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.")
                else:
                    visit(child, prefix)

        visit(ast.parse(text), "")
    return functions, modules


def _over(sizes: dict[str, int], limit: int) -> dict[str, int]:
    return {name: size for name, size in sizes.items() if size > limit}


@pytest.mark.parametrize(
    "kind, limit, allowed",
    [("function", FUNCTION_LIMIT, LONG_FUNCTIONS), ("module", MODULE_LIMIT, LONG_MODULES)],
)
def test_no_function_or_module_grows_past_its_limit_beyond_todays_list(kind, limit, allowed):
    functions, modules = _sizes()
    sizes = functions if kind == "function" else modules
    assert len(functions) > 100 and len(modules) == len(MODULES)  # the measure sees them all
    over = _over(sizes, limit)
    new = {name: size for name, size in over.items() if name not in allowed}
    assert not new, f"new {kind}s over {limit} lines (split them): {new}"
    grown = {name: (allowed[name], size) for name, size in over.items() if size > allowed[name]}
    assert not grown, f"{kind}s over {limit} lines that grew (allowed, now): {grown}"
    done = sorted(name for name in allowed if sizes.get(name, 0) <= limit)
    assert not done, f"{kind}s now within {limit} lines (or gone): remove them from the allow-list: {done}"


# --------------------------------------------------------------------------------------------
# One vocabulary, one place
# --------------------------------------------------------------------------------------------

# Each vocabulary's one literal definition; every other module derives from or imports it.
VOCABULARIES = {
    "PARTNERS": "cutmix.ops.params",
    "AUGMENTS": "cutmix.data.loader",
    "MIXES": "cutmix.training.config",
}


def _literal_tuples(module: str) -> dict[str, int]:
    """The module-level names bound to a tuple of constants in ``module``, and their lines."""
    found = {}
    for node in ast.parse(MODULES[module].read_text(encoding="utf-8")).body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        value = getattr(node, "value", None)
        if isinstance(value, ast.Tuple) and all(isinstance(e, ast.Constant) for e in value.elts):
            found.update({t.id: node.lineno for t in targets if isinstance(t, ast.Name)})
    return found


def test_each_vocabulary_is_spelled_out_once():
    spelled = {
        (name, module) for module in MODULES for name in _literal_tuples(module) if name in VOCABULARIES
    }
    assert spelled == set(VOCABULARIES.items())


def test_the_subsets_are_derived_from_the_vocabularies():
    from cutmix import ops
    from cutmix.data import loader
    from cutmix.training import config
    from cutmix.viz import preview

    assert config.PARTNERS[:-1] == ops.PARTNERS and config.PARTNERS[-1] == "stream"  # + the loader's stream
    assert config.AUGMENTS is loader.AUGMENTS and config.CHOICES["augment"] is loader.AUGMENTS
    assert sorted(preview.PREVIEW_MIXES) == sorted(config.MIXES)
    # The order shown in --help and in messages, as before.
    assert config.PARTNERS == ("permute", "roll", "flip", "stream")
    assert preview.PREVIEW_MIXES == ("cutmix", "mixup", "cutout", "none")


USER_ERRORS = {"UsageError", "DataError", "DownloadError", "DatasetNotFoundError"}


def test_user_errors_are_defined_and_extended_only_in_errors():
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef) or module == "cutmix.errors":
                continue
            bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
            assert node.name not in USER_ERRORS, f"{module} defines {node.name}: define it in cutmix.errors"
            assert not bases & USER_ERRORS, (
                f"{module}.{node.name} extends {bases & USER_ERRORS}: do it in errors"
            )


# --------------------------------------------------------------------------------------------
# import cutmix: the ops only; the rest on first use
# --------------------------------------------------------------------------------------------

_PROBE = """
import json, sys
import cutmix
before = sorted(m for m in sys.modules if m.startswith(("cutmix", "matplotlib")))
listed = sorted(set(dir(cutmix)) & set(cutmix.__all__))
cutmix.load_model, cutmix.evaluate_checkpoint, cutmix.predict_files, cutmix.TrainConfig
after = sorted(m for m in sys.modules if m.startswith("cutmix"))
print(json.dumps({"before": before, "listed": listed, "all": cutmix.__all__, "after": after}))
"""


def test_import_cutmix_loads_only_the_ops_and_the_rest_lazily():
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    probe = json.loads(result.stdout)
    assert probe["before"] and all(m == "cutmix" or m.startswith("cutmix.ops") for m in probe["before"])
    assert not any(m.startswith("cutmix.training") for m in probe["before"])
    lazy = {"load_model", "evaluate_checkpoint", "predict_files", "LoadedCheckpoint", "TrainConfig"}
    assert lazy <= set(probe["all"]) and lazy <= set(probe["listed"])  # listed by dir() and __all__
    assert "cutmix.training.evaluate" in probe["after"] and "cutmix.training.config" in probe["after"]


def test_the_lazy_names_are_the_library_ones():
    import cutmix
    from cutmix.training import config, evaluate

    assert cutmix.load_model is evaluate.load_model and cutmix.predict_files is evaluate.predict_files
    assert (
        cutmix.evaluate_checkpoint is evaluate.evaluate_checkpoint
        and cutmix.TrainConfig is config.TrainConfig
    )
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        cutmix.no_such_name  # noqa: B018
