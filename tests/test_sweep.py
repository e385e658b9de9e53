"""sweep.py: a grid of tiny train.py runs with rows, table and charts; killed and re-run it trains only the
missing runs; a failing setting is recorded and the sweep goes on; Optuna shares a study through SQLite."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run_script

TINY = """
n_layer = 1
n_head = 2
n_embd = 16
block_size = 16
batch_size = 4
gradient_accumulation_steps = 1
max_iters = 4
eval_interval = 2
eval_iters = 1
log_interval = 1
warmup_iters = 0
lr_decay_iters = 4
compile = False
plot = False
device = 'cpu'
"""


@pytest.fixture(scope='module')
def cfg(tmp_path_factory):
    """A config file for a tiny run (1 block, 16 channels, 4 iterations) on GPT-2 ids in a tmp folder."""
    d = tmp_path_factory.mktemp('sweepdata')
    ids = np.random.default_rng(0).integers(1000, 1100, 3000).astype(np.uint16)
    ids[:2500].tofile(d / 'train.bin')
    ids[2500:].tofile(d / 'val.bin')
    (d / 'tiny.py').write_text(TINY + f"data_dir = {str(d)!r}\n")
    return d / 'tiny.py'


def rows(sweep_dir):
    with open(os.path.join(sweep_dir, 'results.jsonl')) as f:
        return [json.loads(line) for line in f]


def sweep(cwd, *argv, check=True):
    return run_script('tools.sweep', *argv, cwd=cwd, check=check)


def test_grid_killed_and_rerun_trains_only_missing_runs(cfg, tmp_path):
    argv = [cfg, '--grid=learning_rate=1e-2,1e-3 n_embd=16,32', '--sweep_dir=sw']
    proc = subprocess.Popen([sys.executable, '-m', 'tools.sweep', *map(str, argv)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT)})
    results = tmp_path / 'sw' / 'results.jsonl'
    t0 = time.time()
    while not (results.exists() and results.read_text().count('\n') >= 1) and time.time() - t0 < 120:
        time.sleep(0.2)
    time.sleep(1.0)  # into the second run
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its train.py: a crash mid-run
    proc.wait()
    first = rows(tmp_path / 'sw')
    assert len(first) == 1 and first[0]['status'] == 'done'

    out = sweep(tmp_path, *argv).stdout
    assert '1 of 4 runs already have results' in out and 'running the other 3' in out
    rs = rows(tmp_path / 'sw')
    names = [r['name'] for r in rs]
    assert len(rs) == 4 and len(set(names)) == 4 and names[0] == first[0]['name']  # none trained twice
    assert {tuple(sorted(r['settings'].items())) for r in rs} == {
        (('learning_rate', lr), ('n_embd', c)) for lr in (1e-2, 1e-3) for c in (16, 32)}
    for r in rs:
        assert r['status'] == 'done' and r['iters'] == 4 and [c[0] for c in r['curve']] == [0, 2, 4]
        assert r['best_val_loss'] == min(c[1] for c in r['curve']) and r['tokens_per_s'] > 0
        assert r['params'] == 50304 * r['settings']['n_embd'] + 16 * r['settings']['n_embd'] + \
            12 * r['settings']['n_embd'] ** 2 + 3 * r['settings']['n_embd']  # wte + wpe + 1 block + norms
        assert os.path.exists(os.path.join(tmp_path, r['out_dir'], 'ckpt.pt'))

    # the table: sorted by best val loss, in the terminal and in results.md; the two charts
    md = (tmp_path / 'sw' / 'results.md').read_text()
    table = [line for line in md.splitlines() if line.startswith('| ') and line[2].isdigit()]
    vals = [float(line.split('|')[5]) for line in table]
    assert len(table) == 4 and vals == sorted(vals) and table[0] in out
    for png in ('val_loss.png', 'curves.png'):
        assert (tmp_path / 'sw' / png).read_bytes()[:4] == b'\x89PNG'

    out = sweep(tmp_path, *argv).stdout  # all done: nothing runs
    assert '4 of 4 runs already have results' in out and len(rows(tmp_path / 'sw')) == 4


def test_ctrl_c_or_a_kill_stops_the_run_and_the_sweep_without_a_row(cfg, tmp_path):
    log = tmp_path / 'sw' / 'runs' / 'learning_rate=0.001' / 'log.csv'
    for how in ('kill train.py', 'Ctrl-C'):
        proc = subprocess.Popen([sys.executable, '-m', 'tools.sweep', str(cfg), '--grid=learning_rate=1e-3,2e-3',
                                 '--max_iters=100000', '--sweep_dir=sw'], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT)})
        try:
            t0 = time.time()
            while not (log.exists() and log.read_text().count('eval') >= 2) and time.time() - t0 < 120:
                time.sleep(0.2)
            if how == 'Ctrl-C':
                os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C reaches the sweep and its train.py
            else:  # kill <pid> of train.py alone: it saves and exits 0, which must not count as a finished run
                child = subprocess.run(['pgrep', '-P', str(proc.pid)], capture_output=True, text=True).stdout.split()
                os.kill(int(child[0]), signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:  # a sweep that did not stop must not outlive the test (max_iters=100000)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert proc.returncode == 130 and 'sweep stopped' in out, (how, out)
        assert not (tmp_path / 'sw' / 'results.jsonl').exists(), how  # no row: the same command trains it again
        assert (log.parent / 'ckpt.pt').exists()  # train.py saved it on the way out
        assert not (tmp_path / 'sw' / 'runs' / 'learning_rate=0.002').exists()
        log.unlink()


def test_a_failing_setting_is_recorded_and_the_sweep_goes_on(cfg, tmp_path):
    proc = sweep(tmp_path, cfg, '--grid=batch_size=0,4', '--sweep_dir=sw')
    bad, good = rows(tmp_path / 'sw')
    assert bad['status'] == 'failed' and bad['error'] == 'error: batch_size=0 must be at least 1'
    assert bad['best_val_loss'] is None
    assert good['status'] == 'done' and good['best_val_loss'] > 0
    assert 'failed: error: batch_size=0 must be at least 1' in proc.stdout


def test_random_search_draws_from_ranges_and_bad_grids_are_one_line(cfg, tmp_path):
    from tools import sweep as sw
    rng = __import__('random').Random(0)
    xs = [sw.draw(rng, ('range', 1e-4, 1e-2, True)) for _ in range(200)]
    assert all(1e-4 <= x <= 1e-2 for x in xs) and sum(x < 1e-3 for x in xs) > 60  # log-uniform: half below 1e-3
    assert {sw.draw(rng, ('range', 2, 4, False)) for _ in range(50)} == {2, 3, 4}
    proc = sweep(tmp_path, cfg, '--grid=learning_rate=1e-4:1e-2', check=False)
    assert proc.returncode == 1 and 'is a range; a grid needs a list' in proc.stderr
    proc = sweep(tmp_path, cfg, '--grid=learning_rate', check=False)
    assert proc.returncode == 1 and proc.stderr.startswith('error: --grid:')


def test_pruning_stops_a_run(cfg, tmp_path, monkeypatch):
    from tools import sweep as sw
    monkeypatch.setattr(sw, 'sweep_dir', str(tmp_path / 'sw'))
    monkeypatch.setattr(sw, 'poll_s', 0.2)
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    seen = []
    row = sw.train({'max_iters': 100000}, 'r', [str(cfg)], on_eval=lambda it, v: seen.append((it, v)) or True)
    assert row['status'] == 'pruned' and seen and seen[0][0] == 0
    assert row['iters'] < 100000 and tuple(row['curve'][0]) == seen[0]


def test_optuna_study_shared_through_sqlite(cfg, tmp_path):
    optuna = pytest.importorskip('optuna')
    argv = [cfg, '--search=optuna', '--grid=learning_rate=1e-3:3e-2:log n_embd=16,32', '--storage=sqlite:///s.db',
            '--sweep_dir=sw']
    sweep(tmp_path, *argv, '--trials=3')
    st = optuna.load_study(study_name='sweep', storage=f'sqlite:///{tmp_path}/s.db')
    assert len(st.trials) == 3 and all(t.state.is_finished() for t in st.trials)
    assert [r['trial'] for r in rows(tmp_path / 'sw')] == [0, 1, 2]
    assert all(1e-3 <= r['settings']['learning_rate'] <= 3e-2 for r in rows(tmp_path / 'sw'))

    out = sweep(tmp_path, *argv, '--trials=4').stdout  # another process joins the study
    assert '3 trials done, 1 to go' in out
    st = optuna.load_study(study_name='sweep', storage=f'sqlite:///{tmp_path}/s.db')
    assert len(st.trials) == 4 and [r['trial'] for r in rows(tmp_path / 'sw')] == [0, 1, 2, 3]
    done = [t for t in st.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and st.best_value == min(r['best_val_loss'] for r in rows(tmp_path / 'sw') if r['status'] == 'done')


def test_optuna_processes_start_a_new_study_together_and_stop_at_the_count(cfg, tmp_path):
    """Two processes on one new SQLite study at once: neither crashes creating it ('table studies already
    exists'), they draw different settings (not one seed each), and the study ends with exactly --trials."""
    optuna = pytest.importorskip('optuna')
    argv = [str(cfg), '--search=optuna', '--grid=learning_rate=1e-3:3e-2:log', '--storage=sqlite:///s.db',
            '--sweep_dir=sw', '--trials=3', '--prune=False']
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT)}
    procs = [subprocess.Popen([sys.executable, '-m', 'tools.sweep', *argv], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    st = optuna.load_study(study_name='sweep', storage=f'sqlite:///{tmp_path}/s.db')
    assert len(st.trials) == 3 and all(t.state.is_finished() for t in st.trials)
    lrs = [t.params['learning_rate'] for t in st.trials]
    assert len(set(lrs)) == 3, lrs  # one sampler seed per process: no repeated settings
