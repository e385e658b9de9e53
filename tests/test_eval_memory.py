"""eval.py over many pairs: memory that grows only by what the kept results need, result files written in
pieces with the same text as one json.dumps, and the HTML page and PNG chart of bounded size."""
import json
import os
import pickle
import random
import subprocess
import sys

from conftest import ROOT, tiny_model, write_ckpt

WORDS = "once upon a time there lived a little girl who loved the sun and the sea and her dog".split()
CHARS = sorted(set(''.join(WORDS) + ' '))
# RSS growth allowed per added pair (bytes): the kept results (lists of ~15 character tokens, their numbers,
# texts and ids: ~3 KB) plus slack for allocator noise. The code this replaced grew by ~120 KB per pair
# for the PNG alone (a 46-pixel-wide column each) and ~15 KB for the HTML page.
BYTES_PER_PAIR = 16_000

PEAK = """
import resource, runpy, sys
sys.argv = ['eval.py'] + sys.argv[1:]
try:
    runpy.run_path({eval!r}, run_name='__main__')
except SystemExit as e:
    assert not e.code, e.code
print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_kb(folder, n):
    """Peak RSS (KB) of a fresh process running eval.py on n generated pairs with a character model."""
    rnd = random.Random(n)
    pairs = [{"prompt": ' '.join(rnd.choices(WORDS, k=rnd.randint(2, 4))),
              "response": ' '.join(rnd.choices(WORDS, k=rnd.randint(1, 3)))} for _ in range(n)]
    with open(folder / f'pairs{n}.json', 'w') as f:
        json.dump(pairs, f)
    out = subprocess.run([sys.executable, '-c', PEAK.format(eval=str(ROOT / 'eval.py')), '--out_dir=out',
                          f'--eval_data=pairs{n}.json', f'--results_dir=r{n}', '--device=cpu', '--batch_size=128'],
                         cwd=folder, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stderr[-2000:]
    with open(folder / f'r{n}' / 'eval_out.json', encoding='utf-8') as f:
        assert len(json.load(f)['pairs']) == n  # the numbers file holds every pair
    return int(out.stdout.split('peak_kb')[-1])


def test_memory_grows_by_a_bounded_amount_per_pair(tmp_path):
    os.makedirs(tmp_path / 'data' / 'c')
    with open(tmp_path / 'data' / 'c' / 'meta.pkl', 'wb') as f:
        pickle.dump({'vocab_size': len(CHARS), 'stoi': {c: i for i, c in enumerate(CHARS)},
                     'itos': dict(enumerate(CHARS))}, f)
    write_ckpt(tmp_path / 'out', tiny_model(vocab_size=len(CHARS), block_size=64), config={'dataset': 'c'})
    small, large = _peak_kb(tmp_path, 300), _peak_kb(tmp_path, 1200)
    per_pair = (large - small) * 1024 / 900
    assert per_pair < BYTES_PER_PAIR, f"{per_pair:.0f} bytes of peak RSS per added pair ({small} -> {large} KB)"
    from PIL import Image
    assert Image.open(tmp_path / 'r1200' / 'eval_out.png').size == Image.open(tmp_path / 'r300' / 'eval_out.png').size
