"""The layering of disco_detr, checked on its import graph read from the source
(disco_detr.tooling.module_graph; every import counts, function-level ones too).

Rules: no import cycle among modules; the models do not import the data pipeline or the training
loop; no runtime package imports the offline tooling; the key-layout converters import neither the
checkpointer nor the model zoo (which run them). tools/ holds entry points: ``tools/<path>.py`` runs
``main`` of ``disco_detr/tooling/<path>.py``, so the tools' logic is in the graph too."""
from __future__ import annotations

import ast
import os

import pytest

from disco_detr.tooling.module_graph import cycles, import_graph, package_graph

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "projects", "DisCoDETR", "disco_detr")
RUNTIME = ("data", "modeling", "engine", "checkpoint", "model_zoo", "convert", "evaluation")
# scripts of tools/ that are not one module's entry point: detectron2's training script, two whose argument
# parsing calls a tooling module of another name, and the three that another part of the code base moves;
# predict.py picks its module (disco_detr.tooling.predict, or the torch-free disco_detr_runtime.predict for
# --model) before importing either (tests/test_predict_runtime.py)
SCRIPTS = {"lazyconfig_train_net.py", "module_graph.py", "make_demo_data.py", "gpu_check.py", "predict.py"}
#: tools whose logic is a shared module of other tools too (tooling/studies.py: the budget study's main and
#: the pieces the label-efficiency study reuses)
TOOL_MODULES = {"pretrain_budget_study.py": "disco_detr.tooling.studies"}


def _tool_module(tool: str) -> str:
    return TOOL_MODULES.get(tool, "disco_detr.tooling." + tool[: -len(".py")].replace(os.sep, "."))


def _tools():
    """Every tools/**/*.py as a path relative to tools/."""
    root = os.path.join(REPO, "tools")
    return sorted(os.path.relpath(os.path.join(folder, name), root) for folder, _, names in os.walk(root)
                  for name in names if name.endswith(".py"))


@pytest.fixture(scope="module")
def graph():
    return import_graph(PACKAGE)


def _edges_from(graph, source_package: str, target_packages) -> list[str]:
    """``module -> imported`` for every import from under ``source_package`` into one of ``target_packages``."""
    def under(module, package):
        return module == package or module.startswith(package + ".")

    return sorted(f"{module} -> {target}" for module, targets in graph.items() if under(module, source_package)
                  for target in targets if any(under(target, p) for p in target_packages))


def test_the_builder_reads_module_and_function_level_imports(graph):
    assert "disco_detr.convert.detrex" in graph["disco_detr.model_zoo.layouts"]  # module level, relative
    # a function-level import: the backend dispatch loads the Triton kernel module only when asked
    assert "disco_detr.modeling.layers.ms_deform_attn_triton" in graph["disco_detr.modeling.layers.ms_deform_attn"]
    assert "disco_detr.modeling.layers.ms_deform_attn" not in graph["disco_detr.modeling.layers.ms_deform_attn_triton"]


def test_the_builder_finds_cycles_and_resolves_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .sub import b\n")
    (pkg / "a.py").write_text("import os\n\ndef f():\n    from .sub.b import g  # lazy\n    return g\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from .. import a\nfrom ..c import h\n\ndef g():\n    return a\n")
    (pkg / "c.py").write_text("import pkg.sub.b\nimport numpy\n")
    g = import_graph(str(pkg))
    assert g == {"pkg": {"pkg.sub", "pkg.sub.b"}, "pkg.a": {"pkg.sub.b"}, "pkg.sub": set(),
                 "pkg.sub.b": {"pkg", "pkg.a", "pkg.c"}, "pkg.c": {"pkg.sub.b"}}
    assert cycles(g) == [["pkg", "pkg.a", "pkg.c", "pkg.sub.b"]]
    assert package_graph(g, 2)["pkg.a"] == {"pkg.sub"}
    assert cycles({"x": {"y"}, "y": set()}) == [] and cycles({"x": {"x"}}) == [["x"]]


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_modeling_imports_neither_data_nor_engine(graph):
    assert _edges_from(graph, "disco_detr.modeling", ("disco_detr.data", "disco_detr.engine")) == []


@pytest.mark.parametrize("package", RUNTIME)
def test_runtime_does_not_import_tooling(graph, package):
    assert _edges_from(graph, f"disco_detr.{package}", ("disco_detr.tooling",)) == []


def test_converters_import_neither_checkpoint_nor_model_zoo(graph):
    assert _edges_from(graph, "disco_detr.convert", ("disco_detr.checkpoint", "disco_detr.model_zoo")) == []


@pytest.mark.parametrize("tool", [t for t in _tools() if t not in SCRIPTS])
def test_a_tool_is_the_entry_point_of_its_tooling_module(graph, tool):
    """tools/<path>.py imports ``main`` from disco_detr.tooling.<path> (a module of the graph) and defines nothing."""
    with open(os.path.join(REPO, "tools", tool), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    module = _tool_module(tool)
    assert module in graph
    imports = [(n.module, [a.name for a in n.names]) for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert (module, ["main"]) in imports
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Assign))]


def test_tooling_modules_of_tools_do_not_import_each_other(graph):
    """Shared tool logic belongs in a module of its own (or the runtime), not in another tool's module."""
    tools = {_tool_module(t) for t in _tools() if t not in SCRIPTS and t not in TOOL_MODULES}
    assert sorted(f"{m} -> {t}" for m in tools for t in graph.get(m, ()) if t in tools) == []
