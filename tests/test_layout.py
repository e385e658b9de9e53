"""The repository's layout, checked from the source: the scripts at the top, no import cycle, nothing imports a script."""
import ast

from conftest import ROOT

SCRIPTS = {'sample', 'eval', 'train', 'serve', 'prepare_bin'}  # what people run; nothing imports them
TOP = SCRIPTS | {'model', 'configurator'}  # upstream's two importable modules stay at the top too
PACKAGES = ('nanoprobs', 'tools', 'bench')
MAX_LINES = 500  # a library file past this wants splitting


def sources():
    """{module name: path} of every Python file of the project (tests and data scripts aside)."""
    found = {p.stem: p for p in ROOT.glob('*.py')}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob('*.py'):
            parts = p.relative_to(ROOT).with_suffix('').parts
            found['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = p
    return found


def imports(path, modules):
    """The project's modules that the file at path imports, anywhere in it (inside functions too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]  # from pkg import module
        else:
            continue
        out |= {n for n in names if n in modules}
    return out


def graph():
    modules = sources()
    return {m: imports(p, modules) - {m} for m, p in modules.items()}


def test_the_top_level_holds_only_the_scripts_people_run():
    assert {p.stem for p in ROOT.glob('*.py')} == TOP


def test_no_module_imports_a_script_and_the_library_imports_no_tool_or_benchmark():
    g = graph()
    for m, deps in g.items():
        assert not deps & SCRIPTS, f"{m} imports the script(s) {sorted(deps & SCRIPTS)}"
        if m in ('model', 'configurator') or m.startswith('nanoprobs'):
            low = {d for d in deps if d.startswith(('tools', 'bench'))}
            assert not low, f"library module {m} imports {sorted(low)}"


def test_there_is_no_import_cycle():
    g = graph()
    state = {}  # module -> 'open' while on the DFS path, 'done' after

    def visit(m, path):
        state[m] = 'open'
        for d in sorted(g[m]):
            assert state.get(d) != 'open', "import cycle: " + " -> ".join(path[path.index(d):] + [d])
            if d not in state:
                visit(d, path + [d])
        state[m] = 'done'

    for m in sorted(g):
        if m not in state:
            visit(m, [m])


def test_the_check_sees_a_cycle_and_an_upward_import(tmp_path):
    """The checks above would catch what they are for: a cycle, and a library module importing a script."""
    (tmp_path / 'a.py').write_text('import b\n')
    (tmp_path / 'b.py').write_text('def f():\n    from a import x\n')
    modules = {'a': tmp_path / 'a.py', 'b': tmp_path / 'b.py'}
    assert imports(modules['a'], modules) == {'b'} and imports(modules['b'], modules) == {'a'}
    (tmp_path / 'lib.py').write_text('from nanoprobs import load\nimport sample\n')
    assert imports(tmp_path / 'lib.py', {'sample', 'nanoprobs', 'nanoprobs.load'}) >= {'sample', 'nanoprobs.load'}


def test_every_file_says_what_it_is_and_library_files_stay_small():
    for m, p in sources().items():
        tree = ast.parse(p.read_text(encoding='utf-8'))
        doc = ast.get_docstring(tree)
        assert doc and doc.strip(), f"{p.relative_to(ROOT)} has no docstring naming its concern"
        if m.startswith('nanoprobs'):
            n = len(p.read_text(encoding='utf-8').splitlines())
            assert n <= MAX_LINES, f"{p.relative_to(ROOT)} has {n} lines (split it by concern)"
    for p in (ROOT / 'nanoprobs' / 'web').iterdir():
        n = len(p.read_text(encoding='utf-8').splitlines())
        assert n <= MAX_LINES, f"{p.relative_to(ROOT)} has {n} lines"


def test_scripts_and_tools_have_a_usage_docstring():
    for m, p in sources().items():
        if m in SCRIPTS or (m.startswith(('tools.', 'bench.'))):
            doc = ast.get_docstring(ast.parse(p.read_text(encoding='utf-8')))
            run = f"python {p.name}" if m in SCRIPTS else f"python -m {m}"
            assert run in doc, f"{p.relative_to(ROOT)}'s docstring shows no usage line ({run} ...)"
