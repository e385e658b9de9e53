"""
Compare tokenizers on one corpus: characters, GPT-2's BPE, and byte-level BPEs trained on it (with and
without GPT-2's regex pre-split, at several vocabulary sizes).

$ python -m tools.compare_tokenizers                          # statistics and the token-boundary figure
$ python -m tools.compare_tokenizers --train=True             # + the same small model trained on each tokenizer
$ python -m tools.compare_tokenizers --input=my.txt --out=results/my_tokenizers --budget_mb=0.5

Statistics: vocabulary size, bytes per token on the val split, and how one sentence is cut
(token_boundaries.png, one row per tokenizer).

--train=True trains the same model shape (n_layer, n_head, n_embd, block_size in tokens) on each of
train_tokenizers for the same budget: equal BYTES OF TEXT seen (budget_mb). Bits per byte asks how well a
model has learnt to predict this text; a model that has read more of the text knows more, so each gets
the same text to learn from. Equal tokens would give GPT-2's BPE (~4 bytes per token) four times the text of
the character model; equal compute is reported too (seconds per run) but is not what is held fixed.
Every model is then evaluated on the identical val text (the first val_bytes of the val split, after an
<|endoftext|>, so every byte is predicted) in bits per byte, the one number that compares across
vocabularies. Writes under out (results/tokenizers, which git ignores; the run the docs show is kept in
results/examples/tokenizers/): comparison.md (tables + a sample per model), comparison.json,
token_boundaries.png, loss_vs_bytes.png. Resumable: a finished run (work_dir/<name>/model/result.json with
the same settings) is not retrained; an interrupted one continues from its checkpoint.
"""

import json
import math
import os
import subprocess
import sys
import time

from configurator import UserError
from nanoprobs.atomic import text_writer
from nanoprobs.report import write_all

# -----------------------------------------------------------------------------
input: str = 'data/children_stories/input.txt'  # the corpus (file, folder or glob), as prepare_bin.py --input
out: str = 'results/tokenizers'         # comparison.md / .json and the PNGs
work_dir: str = 'out-tokenizers'        # per tokenizer: data/ (train.bin, val.bin, vocabulary) and model/
tokenizers: str = 'char,gpt2,bpe-512,bpe-2048,bpe-8192,bpe-512-noregex,bpe-2048-noregex'  # statistics
train_tokenizers: str = 'char,gpt2,bpe-2048,bpe-2048-noregex'  # the ones --train=True trains a model on
sentence: str = "Once upon a time, the little princess couldn't find her golden ball in the well."
val_fraction: float = 0.1               # val = the last this fraction of the text (same for every tokenizer)
train: bool = False                     # also train and evaluate a model per tokenizer
budget_mb: float = 0.5                  # MB of UTF-8 text each model trains on (equal bytes seen)
n_layer: int = 2                        # a model small enough for a CPU: minutes per tokenizer
n_head: int = 4
n_embd: int = 64
block_size: int = 64                    # tokens of context (the same for every tokenizer: same model shape)
batch_size: int = 16
learning_rate: float = 2e-3
evals: int = 8                          # val-loss points per run on the loss chart
eval_iters: int = 5                     # batches per val-loss point
val_bytes: int = 100_000                # bits per byte measured on the first this many bytes of val text
sample_bytes: int = 250                 # about this much text sampled from each model
sample_start: str = 'Once upon a time'  # the samples' prompt
device: str = 'cpu'
seed: int = 1337
# -----------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: train.py is there
EOT = '<|endoftext|>'


def read_json(path):
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def parse_spec(spec):
    """'char' | 'gpt2' | 'bpe-N' | 'bpe-N-noregex' -> dict(kind, vocab_size, bpe_regex)."""
    parts = spec.split('-')
    if spec in ('char', 'gpt2'):
        return dict(kind=spec, vocab_size=0, bpe_regex=True)
    if parts[0] == 'bpe' and len(parts) in (2, 3) and parts[1].isdigit() and parts[2:] in ([], ['noregex']):
        return dict(kind='bpe', vocab_size=int(parts[1]), bpe_regex=len(parts) == 2)
    raise UserError(f"tokenizer {spec!r}: use char, gpt2, bpe-<vocab size> or bpe-<vocab size>-noregex "
                    "(e.g. --tokenizers=char,gpt2,bpe-4096,bpe-4096-noregex)")


def specs(value, setting):
    names = [s.strip() for s in value.split(',') if s.strip()]
    if not names:
        raise UserError(f"{setting} is empty: name at least one tokenizer, e.g. --{setting}=char,gpt2")
    return {n: parse_spec(n) for n in names}


def read_split(input, val_fraction):
    """(train text bytes, val text) split as prepare_bin.py --tokenizer=char|bpe splits: documents joined
    with <|endoftext|>."""
    from nanoprobs.prepare import split_docs
    from nanoprobs.textsource import PrepareError, Source, file_pieces, resolve_inputs
    try:
        paths = resolve_inputs(input)
    except PrepareError as e:
        hint = (" (make it with python data/children_stories/prepare.py, or give --input=)"
                if input == 'data/children_stories/input.txt' else '')
        raise UserError(f"{e}{hint}") from None
    sources = [Source(p) for p in paths]
    docs = [d for d in file_pieces(paths, sources)]
    whole = []
    for text, ends, si in docs:  # pieces of one document back together
        if whole and not whole[-1][1]:
            whole[-1] = (whole[-1][0] + text, ends, si)
        else:
            whole.append((text, ends, si))
    train, val = split_docs(whole, val_fraction)
    return sum(len(t.encode('utf-8')) for t, _, _ in train), ''.join(t + EOT * e for t, e, _ in val)


_kept = []  # what this run finished and wrote whole (tokenizer data, trained results): a Ctrl-C keeps it


def prepare(name, spec, folder):
    """The tokenizer's data (skipped when prepare_info.json says it was made with the same settings)."""
    from nanoprobs.prepare import prepare
    from nanoprobs.textsource import PrepareError
    from nanoprobs.tokenizer import data_tokenizer, gpt2_tokenizer
    key = dict(spec, input=os.path.abspath(input), val_fraction=val_fraction)
    info_path = os.path.join(folder, 'prepare_info.json')
    if not (os.path.exists(info_path) and read_json(info_path).get('compare') == key):
        print(f"--- {name}: preparing {folder}", flush=True)
        try:
            prepare(input=input, out_dir=folder, val_fraction=val_fraction, block_size=block_size,
                                tokenizer=spec['kind'], vocab_size=spec['vocab_size'] or 4096,
                                bpe_regex=spec['bpe_regex'], text_split=True, show_progress=False,
                                extra={'compare': key})
        except PrepareError as e:
            raise UserError(str(e)) from None
    info = read_json(info_path)
    tok = data_tokenizer(folder) or gpt2_tokenizer()
    _kept.append(f"{name}'s data")
    return tok, info


def text_bytes(text):
    """UTF-8 bytes of text without its <|endoftext|> separators (which are not text)."""
    return len(text.replace(EOT, '').encode('utf-8'))


def cut(text, n):
    """The first ~n UTF-8 bytes of text, ending at a line end."""
    head = text.encode('utf-8')[:n].decode('utf-8', errors='ignore')
    j = head.rfind('\n')
    return head[:j + 1] if j > 0 else head


def run_training(name, tok, folder, bpt_train, model_dir):
    """Train (or continue) one model through train.py; returns (iters, seconds)."""
    tokens_per_iter = batch_size * block_size
    iters = max(1, math.ceil(budget_mb * 1e6 / bpt_train / tokens_per_iter))
    every = max(1, iters // evals)
    resume = (os.path.exists(os.path.join(model_dir, 'ckpt.pt'))
              or os.path.exists(os.path.join(model_dir, 'ckpt_last.pt')))
    args = [f'--out_dir={model_dir}', f'--data_dir={folder}', f'--dataset={name}',
            f"--init_from={'resume' if resume else 'scratch'}", f'--n_layer={n_layer}', f'--n_head={n_head}',
            f'--n_embd={n_embd}', f'--block_size={block_size}', f'--batch_size={batch_size}',
            '--gradient_accumulation_steps=1', f'--learning_rate={learning_rate}',
            f'--min_lr={learning_rate / 10}', f'--max_iters={iters}', f'--lr_decay_iters={iters}',
            f'--warmup_iters={max(1, min(100, iters // 10))}', f'--eval_interval={every}',
            f'--eval_iters={eval_iters}', f'--log_interval={every}', '--beta2=0.99',
            '--dropout=0.0', '--bias=False', '--always_save_checkpoint=True', f'--device={device}',
            '--compile=False', '--plot=False', f'--seed={seed}', '--progress=False']
    print(f"--- {name}: {iters} iterations of {tokens_per_iter:,} tokens = "
          f"{iters * tokens_per_iter * bpt_train / 1e6:.2f} "
          f"MB of text ({bpt_train:.2f} bytes per token)")
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'train.py'), *args])
    interrupted = False
    while True:  # Ctrl-C reaches train.py too (one process group): let it save, then stop here
        try:
            returncode = proc.wait()
            break
        except KeyboardInterrupt:
            interrupted = True
    if interrupted and returncode == 130:  # Ctrl-C while train.py was starting: nothing trained, nothing saved
        raise KeyboardInterrupt
    if returncode != 0:
        raise UserError(f"training {name} failed (train.py exit status {returncode}); "
                        f"run again to continue from {model_dir}")
    reached = trained_iters(model_dir)
    if interrupted or reached < iters:  # train.py saves and exits 0 when it is stopped (Ctrl-C, SIGTERM)
        raise UserError(f"training {name} was stopped at iteration {reached} of {iters} (saved in "
                        f"{model_dir}); run the same command again to continue it")
    return iters, time.time() - t0


def trained_iters(model_dir):
    """The iteration a run's latest checkpoint in model_dir reached (0 without one)."""
    from nanoprobs.load import load_checkpoint
    from nanoprobs.trainstate import resume_path
    path = resume_path(model_dir)
    return load_checkpoint(path).get('iter_num', 0) if os.path.exists(path) else 0


def evaluate(name, spec, tok, folder, info, train_bytes, val_text):
    """Train and evaluate one tokenizer's model, or read the result of a finished run."""
    import torch
    from nanoprobs.sampling import make_generator
    from nanoprobs.heldout import evaluate_val
    from nanoprobs.load import load_model
    model_dir = os.path.join(work_dir, name, 'model')
    key = dict(spec, budget_mb=budget_mb, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
               block_size=block_size, batch_size=batch_size, learning_rate=learning_rate,
               val_bytes=val_bytes, seed=seed, input=os.path.abspath(input), sample_start=sample_start,
               sample_bytes=sample_bytes)
    res_path = os.path.join(model_dir, 'result.json')
    if os.path.exists(res_path):
        res = read_json(res_path)
        if res.get('settings') == key:
            print(f"--- {name}: done before ({res_path}); not retrained")
            _kept.append(f"{name}'s model")
            return res
        print(f"--- {name}: settings changed since {res_path}; training again from scratch")
        for f in ('ckpt.pt', 'ckpt_last.pt', 'log.csv', 'result.json'):
            if os.path.exists(os.path.join(model_dir, f)):
                os.remove(os.path.join(model_dir, f))
    bpt_train = train_bytes / info['tokens']['train']
    iters, seconds = run_training(name, tok, folder, bpt_train, model_dir)
    print(f"--- {name}: evaluating on {text_bytes(val_text):,} bytes of val text and sampling", flush=True)
    L = load_model(model_dir, device=device, dtype='float32')
    ids = [tok.eot] + tok.encode(val_text)  # after a separator: every byte of the text is predicted
    r = evaluate_val(L.model, tok, ids, path='val', stride=block_size // 2, progress=False)
    bpt_val = text_bytes(val_text) / sum(1 for i in ids if i != tok.eot)
    curve = []
    with open(os.path.join(model_dir, 'log.csv'), encoding='utf-8') as f:
        import csv
        for row in csv.DictReader(f):
            if row.get('val_loss'):  # nats per token -> bits per byte
                curve.append((int(row['tokens']) * bpt_train, float(row['val_loss']) / math.log(2) / bpt_val))
    prompt = [tok.eot] + tok.encode(sample_start)
    s = L.model.generate(torch.tensor([prompt], device=L.device), math.ceil(sample_bytes / bpt_val),
                         temperature=0.8, top_k=200, generator=make_generator(L.device, seed))[0]
    res = dict(name=name, settings=key, kind=spec['kind'], vocab_size=tok.vocab_size,
               params=L.model.get_num_params(), iters=iters, tokens_seen=iters * batch_size * block_size,
               bytes_seen=round(iters * batch_size * block_size * bpt_train), train_seconds=round(seconds, 1),
               val_bytes=r.bytes, val_tokens=r.tokens, val_bits_per_byte=r.bits_per_byte,
               val_bits_per_token=r.nll / math.log(2) / r.tokens, curve=curve,
               sample=tok.decode(prompt[1:] + list(s.tokens)))
    # written whole or not at all (report.write_all): its presence means "this run is done"
    write_all({res_path: text_writer(json.dumps(res, indent=1, ensure_ascii=False))})
    _kept.append(f"{name}'s model")
    return res


def sentence_pieces(name, tok):
    """The sentence's tokens as text, for the figure (a character vocabulary may lack some of its characters:
    they are still one box each)."""
    try:
        return [tok.token_bytes(i).decode('utf-8', errors='replace') for i in tok.encode(sentence)]
    except ValueError as e:
        print(f"note: {name}: {e}")
        return list(sentence)


def markdown(stats, runs):
    lines = [f"# Tokenizers compared on `{input}`", '',
             f"val split: the last {val_fraction:.0%} of the text; bytes per token measured on all of it "
             "(UTF-8 bytes of text over text tokens; the <|endoftext|> separators are neither).", '',
             '| tokenizer | vocabulary | bytes per token (val) | val tokens | made in (s) |',
             '|---|---:|---:|---:|---:|']
    for s in stats:
        lines.append(f"| {s['name']} | {s['vocab_size']:,} | {s['bytes_per_token']:.3f} | "
                     f"{s['val_tokens']:,} | {s['seconds']:.1f} |")
    lines += ['', '![token boundaries](token_boundaries.png)', '']
    if runs:
        r0 = runs[0]
        lines += [f"## The same model on each ({n_layer} layers, {n_head} heads, {n_embd} channels, "
                  f"block {block_size} tokens, batch {batch_size}, lr {learning_rate:g})", '',
                  f"Budget: equal text seen, {budget_mb:g} MB per model. Bits per byte on the identical "
                  f"first {r0['val_bytes']:,} bytes of the val text (lower is better). For reference on "
                  "other data: nanoGPT's baby GPT on shakespeare_char reaches 1.4697 nats per character "
                  "(2.12 bits per character) after far more training.", '',
                  '| tokenizer | vocabulary | parameters | iterations | tokens seen | MB seen | '
                  'train time (s) | val bits/token | **val bits/byte** |',
                  '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
        for r in sorted(runs, key=lambda r: r['val_bits_per_byte']):
            lines.append(f"| {r['name']} | {r['vocab_size']:,} | {r['params'] / 1e6:.2f}M | {r['iters']:,} | "
                         f"{r['tokens_seen']:,} | {r['bytes_seen'] / 1e6:.2f} | {r['train_seconds']:.0f} | "
                         f"{r['val_bits_per_token']:.3f} | **{r['val_bits_per_byte']:.4f}** |")
        lines += ['', '![loss vs bytes](loss_vs_bytes.png)', '',
                  '### Samples (temperature 0.8, top-k 200)', '']
        for r in runs:
            lines += [f"**{r['name']}**:", '', '```', r['sample'].replace('```', "'''"), '```', '']
    return '\n'.join(lines) + '\n'


def main():
    from nanoprobs.plots.training import token_boxes, tokenizer_curves
    stat_specs = specs(tokenizers, 'tokenizers')
    train_specs = specs(train_tokenizers, 'train_tokenizers') if train else {}
    if not 0 < val_fraction < 1:
        raise UserError(f"val_fraction={val_fraction} must be between 0 and 1, e.g. --val_fraction=0.1")
    train_bytes, val_text = read_split(input, val_fraction)
    eval_text = cut(val_text, val_bytes)
    print(f"{input}: {train_bytes / 1e6:.2f} MB train, {text_bytes(val_text) / 1e6:.2f} MB val")
    stats, rows, toks = [], [], {}
    for name, spec in {**stat_specs, **train_specs}.items():
        folder = os.path.join(work_dir, name, 'data')
        tok, info = prepare(name, spec, folder)
        toks[name] = (tok, info, folder)
        if name not in stat_specs:
            continue
        n = sum(1 for i in tok.encode(val_text) if i != tok.eot)  # text tokens: separators are not text
        stats.append(dict(name=name, vocab_size=tok.vocab_size, bytes_per_token=text_bytes(val_text) / n,
                          val_tokens=n, seconds=info.get('seconds', 0.0)))
        rows.append((name, sentence_pieces(name, tok)))
    os.makedirs(out, exist_ok=True)
    token_boxes(rows, os.path.join(out, "token_boundaries.png"), "how each tokenizer cuts one sentence")
    runs = []
    for name, spec in train_specs.items():
        tok, info, folder = toks[name]
        runs.append(evaluate(name, spec, tok, folder, info, train_bytes, eval_text))
    if runs:
        if len({r['val_bytes'] for r in runs}) != 1:  # the comparison is only fair on identical text
            raise UserError(f"runs were evaluated on different val text: "
                            f"{[r['val_bytes'] for r in runs]} bytes")
        tokenizer_curves({r['name']: r['curve'] for r in runs}, os.path.join(out, 'loss_vs_bytes.png'),
                         f"val loss per byte of text, {budget_mb:g} MB of text per model")
    summary = json.dumps(dict(stats=stats, runs=runs), indent=1, ensure_ascii=False)
    write_all({os.path.join(out, 'comparison.json'): text_writer(summary),
               os.path.join(out, 'comparison.md'): text_writer(markdown(stats, runs))})
    print(markdown(stats, runs))
    print(f"wrote {out}/comparison.md, comparison.json, token_boundaries.png"
          f"{', loss_vs_bytes.png' if runs else ''}")


def interrupted():
    """The one line a Ctrl-C ends with: what is kept, and that a rerun resumes (nothing unfinished is
    recorded as done: tokenizer data and a run's result.json are written whole, at their end)."""
    kept = ', '.join(_kept) if _kept else 'nothing finished yet'
    return (f"interrupted; kept in {work_dir}: {kept} (a training stopped midway keeps its checkpoint); "
            "run the same command again to resume")


if __name__ == '__main__':
    from configurator import configure, run_main
    configure(globals())
    try:
        run_main(main)
    except KeyboardInterrupt:  # Ctrl-C while tokenizers train, data is written or models are evaluated
        print('\n' + interrupted(), file=sys.stderr)
        sys.exit(130)
