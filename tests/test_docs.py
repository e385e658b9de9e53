"""The commands of README.md and docs/: each script or module they run exists and takes each flag they give."""
import ast
import re
import shlex

import pytest

from conftest import ROOT

DOCS = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
FENCE = re.compile(r'^```(?:sh|bash|console|shell)\n(.*?)^```', re.M | re.S)


def commands(text):
    """Each `python ...` command of the text's shell blocks, continuation lines joined, comments cut."""
    for block in FENCE.findall(text):
        for line in block.replace('\\\n', ' ').splitlines():
            line = line.split(' #')[0].strip().lstrip('$ ')
            m = re.search(r'(?:^|\s|;|&&)(?:\S+=\S+\s+)*(python\d?\s.*)$', line)
            if m and not line.startswith('pip '):
                yield m.group(1)


def target(words):
    """(path of the script or module a python command runs, the rest of its words), or None (python -c ...)."""
    if words[1] == '-m':
        if words[2] == 'pytest':
            return None
        return ROOT / (words[2].replace('.', '/') + '.py'), words[3:]
    if words[1].endswith('.py'):
        return ROOT / words[1], words[2:]
    return None


def settable(path):
    """The keys --key=value may set in a configurator script or config file: its module-level names; in an
    argparse script, its options."""
    tree = ast.parse(path.read_text(encoding='utf-8'))
    keys = set()
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            keys.add(node.target.id)
        elif isinstance(node, ast.Assign):
            keys |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    for node in ast.walk(tree):  # argparse: add_argument('--name', ...)
        if isinstance(node, ast.Call) and getattr(node.func, 'attr', '') == 'add_argument':
            keys |= {a.value.lstrip('-').replace('-', '_') for a in node.args
                     if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return keys


def problems(text):
    """What is wrong with the text's commands, one line each."""
    out = []
    for cmd in commands(text):
        try:
            words = shlex.split(cmd)
        except ValueError:
            continue
        found = target(words)
        if found is None:
            continue
        path, rest = found
        if not path.exists():
            out.append(f"{cmd}: {path.relative_to(ROOT)} does not exist")
            continue
        keys = settable(path)
        for w in rest:
            if w.endswith('.py') and not w.startswith('-') and (ROOT / w).exists():
                keys |= settable(ROOT / w)  # a config file: it may add its own keys
        for w in rest:
            m = re.match(r'--([A-Za-z_]\w*)(=|$)', w)
            if m and m.group(1) not in keys:
                out.append(f"{cmd}: {path.relative_to(ROOT)} has no setting {m.group(1)!r}")
    return out


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.name)
def test_every_documented_command_names_a_real_script_and_real_flags(doc):
    assert problems(doc.read_text(encoding='utf-8')) == []


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.name)
def test_every_relative_link_points_at_a_file(doc):
    for link in re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', doc.read_text(encoding='utf-8')):
        if not re.match(r'[a-z]+:', link):
            assert (doc.parent / link).exists(), f"{doc.name} links to {link}, which does not exist"


def test_the_check_catches_a_missing_script_module_and_flag():
    text = "```sh\npython nope.py\npython -m tools.nope\npython sample.py --no_such_flag=1 --start=x\n```\n"
    found = problems(text)
    assert len(found) == 3 and "'no_such_flag'" in found[2] and "'start'" not in found[2]
    assert len(list(commands((ROOT / 'README.md').read_text(encoding='utf-8')))) >= 8  # it reads the README
    assert problems("```sh\npython -m tools.beam --num_beams=3\npython train.py config/train_stories_tiny.py --max_iters=2\n```\n") == []


def test_scripts_write_no_tracked_file_by_default():
    """Documented commands never overwrite the repository's files: the result folders the scripts and tools
    write by default hold no tracked file (results/ tracks only results/examples/, which nothing writes)."""
    import subprocess
    try:
        tracked = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True, check=True,
                                 timeout=30).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        pytest.skip('not a git checkout (git ls-files failed)')
    if not tracked:
        pytest.skip('not a git checkout')
    outputs = {'out', 'results_dir', 'sweep_dir', 'work_dir', 'out_dir', 'export_dir'}
    folders = set()
    for path in [*ROOT.glob('*.py'), *(ROOT / 'tools').glob('*.py')]:
        for node in ast.parse(path.read_text(encoding='utf-8')).body:
            target = node.target if isinstance(node, ast.AnnAssign) else (
                node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
            if (isinstance(target, ast.Name) and target.id in outputs and isinstance(node.value, ast.Constant)
                    and node.value.value):
                folders.add(node.value.value)
    assert 'results/tokenizers' in folders and 'results' in folders  # what compare_tokenizers, eval, sample write
    for folder in folders - {'results'}:
        assert not [f for f in tracked if f.startswith(folder.rstrip('/') + '/')], f"{folder}/ holds tracked files"
    assert all(f.startswith('results/examples/') or f == 'results/README.md'
               for f in tracked if f.startswith('results/')), "results/ tracks files a script could write"
