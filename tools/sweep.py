"""
Hyperparameter sweeps over train.py: a grid, a random sample or an Optuna search of its settings, one
out_dir and one result row per run, a table sorted by val loss and charts.

$ python -m tools.sweep config/train_stories_tiny.py --grid="learning_rate=1e-3,3e-4 n_layer=2,4" --max_iters=300
$ python -m tools.sweep config/train_stories_tiny.py --search=random --trials=6 \\
      --grid="learning_rate=1e-4:1e-2:log n_layer=2,4"
$ python -m tools.sweep config/train_stories_tiny.py --search=optuna --trials=20 --storage=sqlite:///sweep.db \\
      --grid="learning_rate=1e-4:1e-2:log n_layer=2,4"

--grid is space-separated key=values, each a list v1,v2,... or (random and optuna) a range lo:hi, sampled
log-uniformly with lo:hi:log, integers when both ends are. Every other argument (config files and
--key=value) goes to each train.py run unchanged; the swept values come after it and win.

Optuna (pip install optuna) picks each trial's settings from the results so far and stops hopeless runs
early: at each eval of a run the val loss is compared with earlier trials' at that iteration (median
pruning). With --storage pointing at one database, any number of processes or machines running the same
command share the study: each adds trials until it has --trials in all (each process draws its own).

Writes into sweep_dir:
  runs/<name>/   each run's out_dir, as train.py writes it (ckpt.pt, log.csv, loss.png), and train.out,
                 its output
  results.jsonl  one row per run, appended as the run ends: settings, parameter count, best val loss,
                 tokens/s, wall time, status (done, failed with its error line, or pruned) and the val loss
                 curve
  results.md     the runs sorted by best val loss (also printed)
  val_loss.png   best val loss against each swept setting (log x for learning rates)
  curves.png     every run's val loss curve on one chart
Ctrl-C stops the run in progress (train.py saves it) and then the sweep; that run gets no row. Re-running
the same command skips every run that has a row (failed ones too, unless --retry_failed=True), so a crash
or Ctrl-C costs at most the run in progress.
"""

import contextlib
import itertools
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from ast import literal_eval

from configurator import UserError, configure, run_main
from nanoprobs import atomic

# -----------------------------------------------------------------------------
grid = ''  # the settings to sweep: "key=v1,v2 key=lo:hi[:log]" (ranges for random and optuna only)
search = 'grid'  # 'grid' (every combination), 'random' (trials draws) or 'optuna'
trials = 10  # random: how many runs; optuna: how many trials the study should have in all
search_seed = 0  # random: which draws; optuna: the sampler's seed (train.py's own seed is --seed)
sweep_dir = 'sweep'  # runs, results and charts go here
storage = ''  # optuna: a database URL shared by every process of the study, e.g. sqlite:///sweep.db
#   ('' = memory)
study = 'sweep'  # optuna: the study's name in storage
prune = True  # optuna: stop runs whose eval losses are worse than the median of earlier trials
#   at that iteration
retry_failed = False  # run again the runs that failed before (a changed setting, a fixed bug)
poll_s = 1.0  # how often a running run's log.csv is read for new evals (optuna pruning)
# -----------------------------------------------------------------------------
OWN = [k for k, v in list(globals().items())
       if not k.startswith('_') and isinstance(v, (int, float, bool, str))]
TRAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'train.py')  # ../train.py
DONE = ('done', 'failed', 'pruned')


def parse_space(text, search):
    """'lr=1e-3,3e-4 n=2:8:log' -> {'lr': [0.001, 0.0003], 'n': ('range', 2, 8, True)}."""
    space = {}
    for item in text.split():
        key, eq, vals = item.partition('=')
        if not eq or not key or not vals:
            raise UserError(f"--grid: {item!r} is not key=values; write e.g. "
                            f"--grid=\"learning_rate=1e-3,3e-4 n_layer=2,4\"")
        parts = vals.split(':')
        if ',' not in vals and len(parts) in (2, 3) and all(_number(p) is not None for p in parts[:2]):
            if len(parts) == 3 and parts[2] != 'log':
                raise UserError(f"--grid: {item!r}: a range is lo:hi or lo:hi:log")
            lo, hi = _number(parts[0]), _number(parts[1])
            if search == 'grid':
                raise UserError(f"--grid: {item!r} is a range; a grid needs a list of values "
                                f"({key}=v1,v2,...), "
                                f"or sample the range with --search=random or --search=optuna")
            if lo >= hi or (len(parts) == 3 and lo <= 0):
                raise UserError(f"--grid: {item!r}: a range needs lo < hi (and lo > 0 for :log)")
            space[key] = ('range', lo, hi, len(parts) == 3)
        else:
            space[key] = [_value(v) for v in vals.split(',')]
    if not space:
        raise UserError("nothing to sweep: give --grid=\"key=v1,v2 ...\" "
                        "(e.g. --grid=\"learning_rate=1e-3,3e-4\")")
    return space


def _value(s):
    try:
        v = literal_eval(s)
        return v if isinstance(v, (int, float, bool, str)) else s
    except (ValueError, SyntaxError):
        return s


def _number(s):
    v = _value(s)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def draw(rng, spec):
    """One random value of a list or a range (floats rounded to 3 significant digits: readable names)."""
    if isinstance(spec, list):
        return rng.choice(spec)
    _, lo, hi, log = spec
    x = math.exp(rng.uniform(math.log(lo), math.log(hi))) if log else rng.uniform(lo, hi)
    if isinstance(lo, int) and isinstance(hi, int):
        return min(hi, max(lo, round(x)))
    return float(f"{x:.3g}")


def fmt(v):
    return repr(v) if isinstance(v, float) else str(v)


def run_name(settings):
    return ','.join(f"{k}={fmt(v)}" for k, v in settings.items()).replace('/', '_').replace(' ', '_')


def error_line(text, returncode):
    """The line that says why a run failed: train.py's 'error: ...', the signal that killed it (the
    out-of-memory killer's SIGKILL), else the last line (a traceback's)."""
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith('error:')]
    if not errors and returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return (errors or lines or ['(no output)'])[-1]


def read_evals(out_dir):
    """[(iter, val_loss)] of the eval rows train.py has written to out_dir/log.csv so far."""
    import csv
    try:
        with open(os.path.join(out_dir, 'log.csv'), newline='') as f:
            return [(int(r['iter']), float(r['val_loss'])) for r in csv.DictReader(f)
                    if r.get('kind') == 'eval' and r.get('val_loss')]
    except (OSError, ValueError, KeyError):
        return []


def throughput(out_dir):
    """Training tokens per second of the run (tokens and elapsed_s of log.csv's last row; None if unknown)."""
    import csv
    try:
        with open(os.path.join(out_dir, 'log.csv'), newline='') as f:
            rows = list(csv.DictReader(f))
        tokens, seconds = int(rows[-1]['tokens']), float(rows[-1]['elapsed_s'])
        return round(tokens / seconds) if seconds else None
    except (OSError, ValueError, KeyError, IndexError, ZeroDivisionError):
        return None


def train(settings, name, train_args, on_eval=None):
    """Run train.py with train_args + settings in sweep_dir/runs/name; return its result row. on_eval(iter,
    val_loss) is called for each new eval while it runs; if it returns True the run is stopped (pruned)."""
    out = os.path.join(sweep_dir, 'runs', name)
    os.makedirs(out, exist_ok=True)
    if os.path.exists(os.path.join(out, 'log.csv')):
        os.remove(os.path.join(out, 'log.csv'))  # an interrupted attempt's: its evals are not this run's
    cmd = [sys.executable, TRAIN, *train_args, *[f"--{k}={fmt(v)}" for k, v in settings.items()],
           f"--out_dir={out}", '--progress=False']
    t0 = time.time()
    pruned, seen = False, 0
    with open(os.path.join(out, 'train.out'), 'w') as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, 'PYTHONUNBUFFERED': '1'})
        try:
            while proc.poll() is None:
                time.sleep(poll_s if on_eval else 0.2)
                evals = read_evals(out) if on_eval else []
                for it, val in evals[seen:]:
                    if not pruned and on_eval(it, val):
                        pruned = True
                        proc.send_signal(signal.SIGTERM)  # train.py saves and stops at the next safe point
                seen = len(evals)
        except KeyboardInterrupt:  # Ctrl-C reached train.py too (same terminal); let it save, then stop
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            proc.wait()
            raise
    wall = time.time() - t0
    with open(os.path.join(out, 'train.out')) as f:
        text = f.read()
    evals = read_evals(out)
    vals = [(v, it) for it, v in evals if math.isfinite(v)]
    m = re.search(r"parameters: ([\d,]+) trainable of ([\d,]+)", text)
    # a signal that reached train.py but not us (kill <pid>, a job scheduler): it saved and stopped, and the
    # sweep stops too, without a row, so the same command trains this run again
    if not pruned and (proc.returncode in (130, -signal.SIGINT, -signal.SIGTERM)
                       or re.search(r"^interrupted at iter \d+", text, re.M)):
        print(f"{name}: train.py was interrupted", flush=True)
        raise KeyboardInterrupt
    status = 'pruned' if pruned else 'done' if proc.returncode == 0 and vals else 'failed'
    best = min(vals) if vals else (None, None)
    return dict(name=name, settings=settings, status=status, best_val_loss=best[0], best_iter=best[1],
                iters=evals[-1][0] if evals else 0, params=int(m.group(2).replace(',', '')) if m else None,
                trainable=int(m.group(1).replace(',', '')) if m else None, tokens_per_s=throughput(out),
                wall_s=round(wall, 1), error=error_line(text, proc.returncode) if status == 'failed' else '',
                out_dir=out, curve=evals, args=train_args)


def append(row):
    """One JSON line, flushed to disk as the run ends: a crash later loses nothing before it."""
    with open(os.path.join(sweep_dir, 'results.jsonl'), 'a') as f:
        f.write(json.dumps(row) + '\n')
        f.flush()
        os.fsync(f.fileno())


def read_rows():
    path = os.path.join(sweep_dir, 'results.jsonl')
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash mid-write
                pass
    return rows


def said(row, i, n):
    best = row['best_val_loss']
    what = f"best val loss {best:.4f} at iter {row['best_iter']}" if best is not None else row['error']
    print(f"[{i}/{n}] {row['name']}: {row['status']}, {what} ({row['wall_s']:.0f} s)", flush=True)


def run_list(runs, train_args):
    """Grid and random: train each (name, settings) that has no row yet."""
    have = {(r['name'], json.dumps(r['settings'], sort_keys=True), json.dumps(r['args'])): r['status']
            for r in read_rows()}
    todo = []
    for name, settings in runs:
        key = json.dumps(json.loads(json.dumps(settings)), sort_keys=True)  # as a row read back has it
        status = have.get((name, key, json.dumps(train_args)))
        if status in DONE and not (status == 'failed' and retry_failed):
            continue
        todo.append((name, settings))
    if len(todo) < len(runs):
        print(f"{len(runs) - len(todo)} of {len(runs)} runs already have results in "
              f"{sweep_dir}/results.jsonl; "
              f"running the other {len(todo)}")
    for i, (name, settings) in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {name} ...", flush=True)
        row = train(settings, name, train_args)
        append(row)
        said(row, i, len(todo))


def run_optuna(space, train_args):
    """Optuna: trials until the study has `trials` in all (every process sharing storage counts)."""
    try:
        import optuna
    except ImportError:
        raise UserError("--search=optuna needs Optuna: pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # median pruning from the second eval on (the first is the untrained model), once 2 trials have ended
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1) if prune
              else optuna.pruners.NopPruner())
    lock = study_lock(storage)
    try:
        with lock():  # two processes creating one SQLite study at once: one creates it, the other joins
            st = optuna.create_study(study_name=study, storage=storage or None, load_if_exists=True,
                                     direction='minimize', pruner=pruner)
            n = st.user_attrs.get('processes', 0)  # every process joining draws its own trials
            st.set_user_attr('processes', n + 1)
    except (ImportError, ValueError) as e:
        raise UserError(f"--storage={storage!r}: {e}") from None
    st.sampler = optuna.samplers.TPESampler(seed=search_seed + n)
    TS = optuna.trial.TrialState
    ended = (TS.COMPLETE, TS.PRUNED, TS.FAIL)
    left = trials - len(st.get_trials(deepcopy=False, states=ended))
    print(f"optuna study {study!r} ({storage or 'in memory'}): {trials - left} trials done, "
          f"{max(left, 0)} to go")

    def objective(trial):
        settings = {}
        for k, spec in space.items():
            if isinstance(spec, list):
                settings[k] = trial.suggest_categorical(k, spec)
            elif isinstance(spec[1], int) and isinstance(spec[2], int):
                settings[k] = trial.suggest_int(k, spec[1], spec[2], log=spec[3])
            else:
                settings[k] = trial.suggest_float(k, spec[1], spec[2], log=spec[3])

        def on_eval(it, val):
            if not math.isfinite(val):
                return False  # train.py stops on it by itself, as a failure
            trial.report(val, it)
            return trial.should_prune()

        name = f"trial{trial.number:03d}," + run_name({k: float(f"{v:.4g}") if isinstance(v, float) else v
                                                       for k, v in settings.items()})
        row = train(settings, name, train_args, on_eval)
        row['trial'] = trial.number
        append(row)
        said(row, trial.number + 1, trials)
        if row['status'] == 'pruned':
            raise optuna.TrialPruned()
        if row['status'] == 'failed':
            trial.set_user_attr('error', row['error'])
            return float('nan')  # Optuna records the trial as failed; the study goes on
        return row['best_val_loss']

    while True:
        with lock():  # claim a trial only while the study (all processes) has fewer than `trials`
            if len(st.get_trials(deepcopy=False, states=(*ended, TS.RUNNING))) >= trials:
                break
            trial = st.ask()
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            st.tell(trial, state=TS.PRUNED)
            continue
        except BaseException:  # Ctrl-C, a bug: the trial ends as failed, not running for ever
            st.tell(trial, state=TS.FAIL)
            raise
        st.tell(trial, value) if math.isfinite(value) else st.tell(trial, state=TS.FAIL)


def study_lock(storage):
    """A context manager that holds an exclusive lock on an SQLite study's folder (flock) while a process
    creates or joins the study and claims a trial; other storages (a database server) lock on their own."""
    m = re.match(r'sqlite:///(.+)', storage or '')
    if not m:
        return contextlib.nullcontext
    folder = os.path.dirname(os.path.abspath(m.group(1)))
    return lambda: atomic.folder_lock(folder)


def report(space, train_args):
    """The table (printed and results.md) and the two charts, from this sweep's rows."""
    latest = {}
    for r in read_rows():
        if r['args'] == train_args and set(r['settings']) == set(space):
            latest[r['name']] = r  # a retried run: its last row
    rows = sorted(latest.values(),
                  key=lambda r: (r['best_val_loss'] is None or r['status'] == 'failed',
                                 r['best_val_loss'] if r['best_val_loss'] is not None else 0))
    if not rows:
        print("no results yet")
        return
    keys = list(space)
    head = ['#', *keys, 'params', 'best val loss', 'at iter', 'tokens/s', 'wall s', 'status']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for i, r in enumerate(rows, 1):
        cells = [str(i), *[f"{v:.4g}" if isinstance(v, float) else str(v)
                           for v in (r['settings'][k] for k in keys)],
                 f"{r['params']:,}" if r['params'] else '',
                 f"{r['best_val_loss']:.4f}" if r['best_val_loss'] is not None else '',
                 str(r['best_iter']) if r['best_iter'] is not None else '',
                 f"{r['tokens_per_s']:,}" if r['tokens_per_s'] else '', f"{r['wall_s']:.0f}",
                 r['status'] + (f": {r['error']}".replace('|', '/') if r['error'] else '')]
        lines.append('| ' + ' | '.join(cells) + ' |')
    table = '\n'.join(lines)
    print(table)
    cmd = 'python -m tools.sweep ' + ' '.join(sys.argv[1:])
    atomic.write_text(os.path.join(sweep_dir, 'results.md'), f"# Sweep results\n\n`{cmd}`\n\n{table}\n")
    from nanoprobs.plots.training import sweep_curves, sweep_values
    ok = [r for r in rows if r['best_val_loss'] is not None]
    if ok:
        name = os.path.basename(os.path.abspath(sweep_dir))
        sweep_values(ok, keys, os.path.join(sweep_dir, 'val_loss.png'),
                     [k for k in keys if isinstance(space[k], list)], title=f"{name}: best val loss")
        sweep_curves(ok, os.path.join(sweep_dir, 'curves.png'), title=f"{name}: val loss of every run")
    print(f"wrote {sweep_dir}/results.md, val_loss.png, curves.png")


def main():
    own, train_args = [], []
    for a in sys.argv[1:]:
        (own if a.startswith('--') and a[2:].partition('=')[0].replace('-', '_') in OWN
         else train_args).append(a)
    configure(globals(), own)
    if any(a.startswith('--out_dir=') for a in train_args):
        raise UserError("--out_dir: every run gets its own (sweep_dir/runs/<name>); "
                        "choose the folder with --sweep_dir")
    if search not in ('grid', 'random', 'optuna'):
        raise UserError(f"--search={search!r}: use grid, random or optuna")
    if trials < 1:
        raise UserError(f"--trials={trials}: must be at least 1")
    space = parse_space(grid, search)
    os.makedirs(sweep_dir, exist_ok=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill: stop the run (it saves), as Ctrl-C
    try:
        if search == 'grid':
            combos = [dict(zip(space, vs)) for vs in itertools.product(*space.values())]
            run_list([(run_name(s), s) for s in combos], train_args)
        elif search == 'random':
            rng, runs = random.Random(search_seed), {}
            for _ in range(100 * trials):  # distinct draws (a small list space may have fewer than trials)
                s = {k: draw(rng, spec) for k, spec in space.items()}
                runs.setdefault(run_name(s), s)
                if len(runs) == trials:
                    break
            run_list(list(runs.items()), train_args)
        else:
            run_optuna(space, train_args)
    except KeyboardInterrupt:
        print("\nsweep stopped: the run in progress has no row; "
              "the same command continues with the missing runs")
        report(space, train_args)
        sys.exit(130)
    report(space, train_args)


if __name__ == '__main__':
    run_main(main)
