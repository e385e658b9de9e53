"""
Eval's reports: one column spec for console, Markdown and CSV tables; result files written atomically.

    print(pairs_report(run))                       # the console table and totals
    write_results(run, comparison, 'results', 'gpt2')  # results/eval_gpt2.json/.csv/.md/.png, all or nothing
    # an earlier run's set there with other numbers is kept as results/eval_gpt2_<its time>.*

A pairs table row is a Row(p, q, d): a scored pair, the same pair before (or None) and the change in
log-prob (after - before, nats; or None). COLUMNS says, for each column, its header and its cell in
each rendering; the console and Markdown show rounded text, the CSV full precision.
"""
import csv
import errno
import io
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from typing import Callable, NamedTuple

from configurator import UserError
from nanoprobs import atomic
from nanoprobs.atomic import stream_writer, text_writer
from nanoprobs.formatting import format_ppl, format_prob, format_ratio, perplexity
from nanoprobs.scores import PairResult


def arrow(d):
    return '↑' if d > 0 else '↓' if d < 0 else '='


def md_escape(s):
    return s.replace('|', '\\|').replace('\n', '\\n')


class Row(NamedTuple):
    p: PairResult             # the pair, scored by this run (the "after")
    q: PairResult = None      # the same pair before, when comparing
    d: float = None           # p.logprob - q.logprob (nats), when comparing


@dataclass(frozen=True)
class Column:
    """One column of the pairs tables: its header and its cell in the console, in Markdown and in the CSV."""
    title: str                # header in the console and in Markdown
    text: Callable            # Row -> the cell as text, in the console and in Markdown
    width: int = 0            # console: > 0 right-aligned, < 0 left-aligned, 0 as is (a last column)
    csv: tuple = ()           # CSV field names ((): not in the CSV)
    values: Callable = None   # Row -> one CSV value per field name
    tables: tuple = ('pairs',)  # the tables it is in: 'pairs' (one run's scores), 'compare' (before vs after)
    sampling: bool = False    # only when the run has sampling-distribution scores
    gap: int = 1              # spaces before it in the console
    console: bool = True      # in the console table
    md: str = '---:'          # Markdown alignment; '' = not in Markdown
    md_title: str = None      # Markdown header, when it differs from title
    md_text: Callable = None  # Markdown cell, when it differs from text

    def shown(self, tables, sampling):
        """In any of these tables, for a run with (or without) sampling-distribution scores."""
        return any(t in self.tables for t in tables) and (sampling or not self.sampling)


def _surprise(r):
    """Console cell: the least likely response token, its probability and rank, what the model expected."""
    p, i = r.p, r.p.surprise
    expected = f", model expected {repr(p.expected[i])})" if p.ranks[i] > 1 else ")"
    return f"{repr(p.tokens[i])} p={format_prob(p.logprobs[i])} (rank {p.ranks[i]}" + expected


def _md_surprise(r):
    p, i = r.p, r.p.surprise
    return f"`{md_escape(repr(p.tokens[i]))}` {format_prob(p.logprobs[i])} (rank {p.ranks[i]})"


BOTH = ('pairs', 'compare')
COLUMNS = [
    Column('#', lambda r: str(r.p.index), 3, ('pair',), lambda r: [r.p.index], tables=BOTH, gap=0),
    Column('prompt|response', lambda r: r.p.label(), -30, tables=BOTH, gap=2, md=''),
    Column('prompt', lambda r: md_escape(r.p.prompt) or '*(empty)*', csv=('prompt',),
           values=lambda r: [r.p.prompt], tables=BOTH, console=False, md='---'),
    Column('response', lambda r: md_escape(r.p.response), csv=('response',), values=lambda r: [r.p.response],
           console=False, md='---'),
    Column('tokens', lambda r: str(r.p.n), 6, ('tokens',), lambda r: [r.p.n]),
    Column('log-prob', lambda r: f"{r.p.logprob:.3f}", 9, ('logprob',), lambda r: [f"{r.p.logprob:.6f}"]),
    Column('probability', lambda r: format_prob(r.p.logprob), 11, ('probability',),
           lambda r: [format_prob(r.p.logprob)]),
    Column('lp/token', lambda r: f"{r.p.mean_logprob:.3f}", 8, ('mean_logprob',),
           lambda r: [f"{r.p.mean_logprob:.6f}"], md_title='log-prob/token'),
    Column('ppl', lambda r: format_ppl(r.p.perplexity, '.6g'), 9, ('perplexity',),
           lambda r: [f"{r.p.perplexity:.4f}"], md_title='perplexity'),
    Column('greedy', lambda r: 'yes' if r.p.greedy else 'no', 6, ('greedy',), lambda r: [r.p.greedy],
           md=':---:'),
    Column('sampling p', lambda r: format_prob(r.p.sample_logprob), 11, ('sample_logprob',),
           lambda r: [f"{r.p.sample_logprob:.6f}"], sampling=True),
    Column('most surprising token', _surprise, csv=('surprising_token', 'surprising_logprob'),
           values=lambda r: [r.p.tokens[r.p.surprise], f"{r.p.logprobs[r.p.surprise]:.6f}"], gap=2, md='---',
           md_text=_md_surprise),
    # before vs after: only with a comparison (the CSV's after is logprob and probability above)
    Column('before', lambda r: format_prob(r.q.logprob), 11, ('before_logprob', 'before_probability'),
           lambda r: [f"{r.q.logprob:.6f}", format_prob(r.q.logprob)], tables=('compare',)),
    Column('after', lambda r: format_prob(r.p.logprob), 11, tables=('compare',)),
    Column('ratio', lambda r: format_ratio(r.d), 12, tables=('compare',)),  # CSV: log10_ratio, with the Δ
    Column('Δ log-prob', lambda r: f"{r.d:+.3f}", 10, ('delta_logprob', 'log10_ratio'),
           lambda r: [f"{r.d:.6f}", f"{r.d / math.log(10):.6f}"], tables=('compare',)),
    Column('', lambda r: arrow(r.d), csv=('direction',), values=lambda r: [arrow(r.d)], tables=('compare',),
           md=':---:'),
]


def table_rows(run, c=None):
    """A Row per pair of run; with a comparison c, each with its before and its change."""
    if c is None:
        return [Row(p) for p in run.pairs]
    return [Row(p, q, d) for p, q, d in zip(run.pairs, c.before.pairs, c.deltas)]


def console_table(table, rows, sampling):
    """The lines of the console's 'pairs' or 'compare' table: the header, then one per row."""
    cols = [col for col in COLUMNS if col.console and col.shown((table,), sampling)]

    def line(cells):
        return ''.join(' ' * col.gap + (x.rjust(col.width) if col.width > 0 else x.ljust(-col.width))
                       for col, x in zip(cols, cells))
    return [line([col.title for col in cols]).rstrip()] + [line([col.text(r) for col in cols]) for r in rows]


def markdown_table(table, rows, sampling):
    """The lines of a Markdown 'pairs' or 'compare' table."""
    cols = [col for col in COLUMNS if col.md and col.shown((table,), sampling)]

    def line(cells):
        return '|' + '|'.join(f" {x} " if x else ' ' for x in cells) + '|'
    head = line([col.title if col.md_title is None else col.md_title for col in cols])
    align = '|' + ''.join(col.md + '|' for col in cols)
    return [head, align] + [line([(col.md_text or col.text)(r) for col in cols]) for r in rows]


def write_csv(f, run, c=None):
    """Every pair with full-precision numbers into the text file f, a row at a time; with a comparison c,
    the before and the change too."""
    tables = ('pairs',) if c is None else BOTH
    cols = [col for col in COLUMNS if col.csv and col.shown(tables, run.sampling)]
    w = csv.writer(f)
    w.writerow([name for col in cols for name in col.csv])
    for r in table_rows(run, c):
        w.writerow([v for col in cols for v in col.values(r)])


def csv_text(run, c=None):
    """The CSV file's text (write_csv)."""
    f = io.StringIO()
    write_csv(f, run, c)
    return f.getvalue()


def csv_writer(run, c=None):
    """A write_all writer of the CSV file, written a row at a time."""
    return stream_writer(lambda f: write_csv(f, run, c))


# -----------------------------------------------------------------------------
# console reports

def pairs_report(run, verbose=False, tok=None):
    s = run.settings
    passes = f"{run.passes} forward pass{'es' if run.passes != 1 else ''}"
    lines = [f"{len(run.pairs)} pairs from {s.get('eval_data')}, model {run.model}, scored in {passes} "
             f"(batch_size {s.get('batch_size')}), join={s.get('join')}",
             "probabilities under the model distribution (temperature 1, no top-k/top-p)"]
    if run.sampling:
        lines.append(f"'sampling p' = under the sampling distribution (temperature {s['temperature']}, "
                     f"top_k {s['top_k']}, top_p {s['top_p']}); 0 = a token sampling could never draw")
    lines += [''] + console_table('pairs', table_rows(run), run.sampling)
    lines += ['', f"totals over {len(run.pairs)} pairs ({run.n_tokens} response tokens):",
              f"  sum of probabilities       {format_prob(run.log_sum_prob):>11}   (the plain sum: dominated "
              "by the single likeliest pair)",
              f"  sum of log-probabilities   {run.logprob:>11.3f}   (log of the product: all pairs together)",
              f"  mean log-prob per token    {run.mean_logprob:>11.4f}   (perplexity "
              f"{perplexity(run.mean_logprob):.6g}; compares across lengths)",
              f"  greedy decoding reproduces {sum(p.greedy for p in run.pairs)} of {len(run.pairs)} "
              "responses"]
    notes = [f"  pair {p.index}: {p.note}" for p in run.pairs if p.note]
    if notes:
        lines += ['', 'notes:'] + notes
    if verbose:
        lines += ['', 'exact tokens: the context (its last 8 tokens), then each response token, its log-prob '
                  'and rank:']
        for p in run.pairs:
            n = len(p.prompt_ids)
            last = [tok.token_text(t) for t in p.prompt_ids[-8:]] if tok else p.prompt_ids[-8:]
            lines.append(f"{p.index:>3}  context of {n} token{'s' if n != 1 else ''}: "
                         + ('... ' if n > 8 else '') + ' '.join(map(repr, last)))
            lines.append('     ' + '  '.join(f"{repr(t)} {lp:.2f} r{r}"
                                             for t, lp, r in zip(p.tokens, p.logprobs, p.ranks)))
    return '\n'.join(lines)


def held_out(runs):
    """[(label, ValResult)] of the labelled runs that have held-out metrics."""
    return [(label, r.val) for label, r in runs if r.val is not None]


def val_report(runs):
    """Held-out data metrics of one or more runs (columns), e.g. before and after."""
    vals = held_out(runs)
    if not vals:
        return ''
    v0 = vals[0][1]
    windows, columns, notes = val_rows(vals)
    lines = [f"held-out data {v0.path}: {v0.tokens:,} tokens predicted ({v0.bytes:,} UTF-8 bytes of text), "
             + windows, f"  {'':<16}" + ''.join(f"{label:>14}" for label, _ in vals)]
    for k, (title, _) in enumerate(columns[0]):
        lines.append(f"  {title:<16}" + ''.join(f"{m[k][1]:>14}" for m in columns))
    return '\n'.join(lines + [f"  note: {n}" for n in notes])


def val_rows(vals):
    """(how the windows were cut, each column's [(name, value)], notes) of labelled held-out results.
    Each model reads windows of its own block_size: one phrase when they agree, else a row per column."""
    v0 = vals[0][1]
    columns = [v.metrics() for _, v in vals]
    notes = []
    if len({(v.window, v.stride) for _, v in vals}) == 1:
        windows = f"windows of {v0.window} tokens, {v0.stride} predicted per window"
    else:
        windows = "windows of each model's block_size (row 'window (stride)': stride = predicted per window)"
        columns = [m + [('window (stride)', f"{v.window} ({v.stride})")] for m, (_, v) in zip(columns, vals)]
        notes.append("the windows differ in length: a longer one gives more context (lower perplexity)")
    if len(vals) == 2 and (vals[0][1].path, vals[0][1].tokens) != (vals[1][1].path, vals[1][1].tokens):
        notes.append("the two columns were measured on different data or token counts: not comparable")
    return windows, columns, notes


def compare_report(c, verbose=False):
    b, a = c.before, c.after
    lines = ["before vs after (probabilities under the model distribution; ratio = after / before):",
             f"  before: {b.model}  [{b.source}]", f"  after:  {a.model}  [{a.source}]", '']
    lines += console_table('compare', table_rows(a, c), a.sampling)
    same = len(c.deltas) - c.rose - c.fell
    change = a.logprob - b.logprob
    lines += ['', f"{c.rose} of {len(c.deltas)} pairs rose (↑), {c.fell} fell (↓)"
              + (f", {same} unchanged" if same else ''),
              f"  sum of log-probabilities  {b.logprob:.3f} → {a.logprob:.3f}  ({change:+.3f} nats, "
              f"{format_ratio(change)})",
              f"  mean log-prob per token   {b.mean_logprob:.4f} → {a.mean_logprob:.4f}  (perplexity "
              f"{perplexity(b.mean_logprob):.6g} → {perplexity(a.mean_logprob):.6g})",
              f"  sum of probabilities      {format_prob(b.log_sum_prob)} → {format_prob(a.log_sum_prob)}"]
    missing = [p.index for p, ds in zip(a.pairs, c.token_deltas) if ds is None]
    for gains in (True, False):
        top = c.top_tokens(8, gains)
        if top:
            lines += ['', f"tokens that {'gained' if gains else 'lost'} the most probability:"]
            for p, i, d in top:
                q = b.pairs[p.index - 1]
                lines.append(f"  pair {p.index:>2}  {repr(p.tokens[i]):<16} {format_prob(q.logprobs[i]):>10}"
                             f" → {format_prob(p.logprobs[i]):<10} {d:+.3f} {arrow(d)}")
    if missing:
        lines.append(f"  (pairs {missing} are tokenized differently in the two runs: no per-token view)")
    if verbose:
        lines += ['', 'every token, Δ log-prob (after − before):']
        for p, ds in zip(a.pairs, c.token_deltas):
            if ds:
                changes = '  '.join(f"{repr(t)} {d:+.2f}" for t, d in zip(p.tokens, ds))
                lines.append(f"{p.index:>3}  {changes}")
    v = val_report([('before', b), ('after', a)])
    return '\n'.join(lines + (['', v] if v else []))


# -----------------------------------------------------------------------------
# Markdown

def markdown(run, c=None):
    """A Markdown report: pairs, totals, held-out metrics, and the comparison when there is one."""
    s = run.settings
    sampling = (f"; 'sampling p' under temperature {s['temperature']}, top_k {s['top_k']}, "
                f"top_p {s['top_p']}." if run.sampling else '.')
    out = [f"# eval: {run.model}", '',
           f"{len(run.pairs)} pairs from `{s.get('eval_data')}`, join={s.get('join')}, "
           f"dtype {s.get('dtype')}. Probabilities are under the model distribution (temperature 1, "
           "no top-k/top-p)" + sampling, '']
    out += markdown_table('pairs', table_rows(run), run.sampling)
    out += ['', f"Totals over {run.n_tokens} response tokens: sum of probabilities "
            f"{format_prob(run.log_sum_prob)}, sum of log-probabilities {run.logprob:.3f}, "
            f"mean log-prob per token {run.mean_logprob:.4f} "
            f"(perplexity {perplexity(run.mean_logprob):.6g}).", '']
    if c is not None:
        b = c.before
        out += ['## Before vs after', '', f"Before: `{b.model}` ({b.source}). After: `{run.model}`. "
                f"{c.rose} of {len(c.deltas)} pairs rose, {c.fell} fell.", '']
        out += markdown_table('compare', table_rows(run, c), run.sampling)
        out += ['', f"Sum of log-probabilities {b.logprob:.3f} → {run.logprob:.3f}; mean per token "
                f"{b.mean_logprob:.4f} → {run.mean_logprob:.4f}.", '',
                '### Tokens that gained and lost the most', '',
                '| pair | token | before | after | Δ log-prob |', '|---:|---|---:|---:|---:|']
        for p, i, d in c.top_tokens(10, True) + c.top_tokens(10, False):
            out.append(f"| {p.index} | `{md_escape(repr(p.tokens[i]))}` | "
                       f"{format_prob(b.pairs[p.index - 1].logprobs[i])} | "
                       f"{format_prob(p.logprobs[i])} | {d:+.3f} {arrow(d)} |")
        out.append('')
    vals = held_out((('before', c.before), ('after', run)) if c else (('model', run),))
    if vals:
        v0 = vals[0][1]
        windows, columns, notes = val_rows(vals)
        out += ['## Held-out data', '', f"`{v0.path}`: {v0.tokens:,} tokens predicted "
                f"({v0.bytes:,} UTF-8 bytes of text), {windows}.", '',
                '| | ' + ' | '.join(label for label, _ in vals) + ' |', '|---|' + '---:|' * len(vals)]
        for k, (title, _) in enumerate(columns[0]):
            out.append(f"| {title} | " + ' | '.join(m[k][1] for m in columns) + ' |')
        out += [''] + [f"Note: {n}." for n in notes] + ([''] if notes else [])
    return '\n'.join(out)


# -----------------------------------------------------------------------------
# result files

def iter_json(o):
    """json.dumps(o, indent=1, ensure_ascii=False, allow_nan=False)'s text in pieces, by json's own encoder:
    a results file of any size is written without holding its whole text (its pairs a scores.Lazy list)."""
    return json.JSONEncoder(indent=1, ensure_ascii=False, allow_nan=False).iterencode(o)


def results_dict(run, c=None, first=None, lazy=False):
    """The dict a results file holds (run.to_dict, with the comparison); first=N: only the first N pairs
    (and their before), the totals still those of every pair (the HTML page's data); lazy: each pair's
    dict made only as iter_json writes it."""
    d = run.to_dict(first, lazy)
    if c is not None:
        d['comparison'] = c.to_dict(first, lazy)
    return d


def json_writer(d):
    """A write_all writer of d as a results file (iter_json: written in pieces)."""
    def write_to(f):
        for piece in iter_json(d):
            f.write(piece)
    return stream_writer(write_to)


def same_text(path, pieces):
    """path's text is exactly the concatenation of pieces (read as they come; stops at a difference)."""
    try:
        with open(path, encoding='utf-8', newline='') as f:
            for piece in pieces:
                if f.read(len(piece)) != piece:
                    return False
            return f.read(1) == ''
    except (OSError, UnicodeDecodeError):
        return False


def write_all(writers, remove=()):
    """{path: write(tmp_path)}: every file is written under a temporary name, then all are renamed into
    place and the `remove` paths (files of an earlier set that this one does not have) deleted, under a lock
    on the folder (atomic.write_all). So an error (a full disk, a failing chart) replaces nothing, and
    concurrent runs of one name leave one run's complete set, never a mix of two.
    An operating-system error is a UserError naming the file and the cause."""
    try:
        paths = atomic.write_all(writers, lock=True, remove=remove)
    except OSError as e:
        where = e.filename or os.path.dirname(next(iter(writers))) or '.'
        earlier = ('the set there may be incomplete: run again' if getattr(e, 'partial', False)  # rare
                   else 'earlier result files there are unchanged')
        cause = e.strerror or str(e) or type(e).__name__
        fix = 'free some disk space' if e.errno == errno.ENOSPC else 'fix that'
        raise UserError(f"cannot write {where}: {cause}; {earlier}. "
                        f"{fix.capitalize()}, or give --results_dir=<another folder>") from None
    # temporary files of eval runs that were killed (kill -9, a power cut) before cleaning up
    atomic.remove_stale(os.path.dirname(paths[0]) or '.', names=('eval_*',))
    return paths


HTML_PAIRS = 2000  # the HTML page shows at most this many pairs (~1 MB of page per 1000 short pairs)
SET_FILES = ('.json', '.csv', '.md', '.png', '_tokens.png', '.html')  # one run's set: eval_<name><these>


def keep_earlier(base, new_json, keep=True):
    """What becomes of an earlier run's set at base (results/eval_<name>) that this run replaces:
    ({copy's path: earlier file}, the line that says so). With other numbers than new_json (the new .json's
    text, or a function giving it in pieces: compared as they come) and keep, the earlier files are copied
    to base_<time of the earlier run>.*; otherwise nothing is
    kept. No earlier set: ({}, '')."""
    earlier = base + '.json'
    try:
        same = same_text(earlier, [new_json] if isinstance(new_json, str) else new_json())
        when = time.strftime('%Y%m%d-%H%M%S', time.localtime(os.path.getmtime(earlier)))
    except (OSError, UnicodeDecodeError):
        return {}, ''
    if same:
        return {}, f"replaced {base}.*: an earlier run with the same numbers"
    if not keep:
        return {}, f"replaced {base}.* of an earlier run with other numbers (keep_earlier=False)"
    kept, n = f"{base}_{when}", 1
    while any(os.path.lexists(kept + ext) for ext in SET_FILES):  # two runs in one second
        n += 1
        kept = f"{base}_{when}-{n}"
    copies = {kept + ext: base + ext for ext in SET_FILES if os.path.isfile(base + ext)}
    return copies, (f"kept the earlier run's {base}.* (other numbers) as {kept}.*; "
                    "--keep_earlier=False would replace it")


def write_results(run, c, results_dir, name, show=False, html=False, keep=True):
    """results/eval_<name>.json/.csv/.md/.png (+ _tokens.png when comparing, + .html for the browser
    report of the first HTML_PAIRS pairs, made from the .json's own text: the same numbers): one run's
    set, or nothing. The .json and .csv are written a piece at a time. An earlier run's set of that name
    with other numbers is kept beside it (keep_earlier), unless keep=False; one line says what became of it."""
    from nanoprobs.plots import evals
    try:
        os.makedirs(results_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the results folder {results_dir}: {e.strerror or e}; "
                        "give --results_dir=<another folder>") from None
    base = os.path.join(results_dir, f"eval_{name}")
    d = results_dict(run, c, lazy=True)  # each pair's dict is made as it is written
    writers = {base + '.json': json_writer(d), base + '.csv': csv_writer(run, c),
               base + '.md': text_writer(markdown(run, c))}
    copies, note = keep_earlier(base, lambda: iter_json(d), keep)
    for copy, earlier in copies.items():  # written with the new set, under the same rules
        writers[copy] = lambda path, earlier=earlier: shutil.copyfile(earlier, path)

    labelled = len(run.pairs) <= evals.LABELLED_PAIRS  # more: dots against the pair's number, no labels
    labels = [f"{p.index}  {p.label(26)}" for p in run.pairs] if labelled else []
    if c is None:
        series = {run.model: [p.logprob for p in run.pairs]}
    else:
        series = {'before: ' + c.before.model: [p.logprob for p in c.before.pairs],
                  'after: ' + run.model: [p.logprob for p in run.pairs]}
    data = os.path.basename(run.settings.get('eval_data', ''))
    title = f"P(response | prompt), {len(run.pairs)} pairs of {data}"
    writers[base + '.png'] = lambda path: evals.eval_pairs(labels, series, path, title, show=show)
    if c is not None and (c.top_tokens(1, True) or c.top_tokens(1, False)):  # some token changed
        items = [(p.tokens[i], p.index, dd) for p, i, dd in c.top_tokens(12, True) + c.top_tokens(12, False)]
        writers[base + '_tokens.png'] = lambda path: evals.eval_token_changes(
            items, path, f"tokens whose probability changed most: {c.before.model} → {run.model}",
            show=show)
    if html:
        from nanoprobs import html_report
        # the page holds the first HTML_PAIRS pairs (the numbers files every pair), from the same JSON text
        head = json.loads(''.join(iter_json(results_dict(run, c, HTML_PAIRS))))
        page, _ = html_report.render(html_report.eval_page(head))
        writers[base + '.html'] = text_writer(page)  # write_all gives it a temporary name, like the others
    # a set without a tokens chart or a page removes an earlier run's one: no file from another run stays
    paths = write_all(writers, remove=[base + ext for ext in ('_tokens.png', '.html')
                                       if base + ext not in writers])
    if note:
        print(note)
    return [p for p in paths if p not in copies]
