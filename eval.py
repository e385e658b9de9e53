"""
Score the prompt/response pairs of eval_data.json: how probable is each response after its prompt?
Run it before and after fine-tuning and compare.

    python eval.py --init_from=gpt2                            # OpenAI's GPT-2 (downloaded once)
    python eval.py --init_from=resume --out_dir=out-children   # a train.py checkpoint
    python eval.py --init_from=resume --out_dir=out-children --compare_to=results/eval_gpt2.json
    python eval.py --init_from=resume --out_dir=out-children --compare_init_from=gpt2 \\
                   --val_data=data/children_stories/val.bin    # + perplexity, bits/byte, top-1/5 accuracy

It takes sample.py's settings (init_from, out_dir, temperature, top_k, top_p, device, dtype, ...).
Every run prints one row per pair and totals, and writes results/eval_<name>.json (everything, machine-
readable), .csv, .md (a table for a report) and .png (a dot per pair, log scale; before vs after
when comparing, plus eval_<name>_tokens.png: the tokens that gained or lost the most).

In a notebook:
    from eval import score_pairs
    run = score_pairs('eval_data.json', 'gpt2')   # prints the table, returns a scores.EvalRun

Probabilities are under the model's own distribution (temperature 1, no top-k/top-p). Setting
temperature, top_k or top_p adds the probability under that sampling distribution, labelled as such.
Pair files: pairs.py; result data: scores.py; tables and result files: report.py; held-out: heldout.py.
"""
import os
import re
import sys
import time
from contextlib import nullcontext

from configurator import UserError
from nanoprobs.sampling import check_sampling, is_model_distribution
from nanoprobs.heldout import check_val_path, evaluate_val, read_val_ids
from nanoprobs.load import load_model
from nanoprobs.pairs import JOIN_MODES, check_pairs, join_texts, read_pairs, read_results, tokenize_pair
from nanoprobs.report import compare_report, pairs_report, val_report, write_results
from nanoprobs.scores import EvalDataError, EvalRun, PairResult, compare

# -----------------------------------------------------------------------------
init_from: str = 'resume'  # 'resume' (out_dir/ckpt.pt), 'gpt2'...'gpt2-xl', a Hugging Face folder, a .pt
out_dir: str = 'out'  # where init_from='resume' finds ckpt.pt
eval_data: str = 'eval_data.json'  # JSON list of {"prompt": ..., "response": ...} (extra keys ignored)
join: str = 'auto'  # how prompt and response meet: 'auto' (as a person reads), 'none' (as written), 'space'
batch_size: int = 16  # pairs (or val windows) per forward pass
temperature: float = 1.0  # 1.0 = the model's own distribution; other values add a sampling-distribution score
top_k: int | None = None  # None/0 = off; set: also report the score under top-k sampling
top_p: float = 1.0  # 1.0 = off; < 1: also report the score under nucleus sampling
device: str = 'auto'  # 'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:1', 'mps'
dtype: str = 'float32'  # 'auto' = bfloat16/float16 on CUDA: faster, but every log-prob moves by ~1e-2
compile: bool = False  # torch.compile the model (CUDA only); scoring is one pass, so it rarely pays off
compare_to: str = ''  # results/eval_<x>.json of an earlier run: the "before" of a before/after comparison
compare_init_from: str = ''  # or a second model (like init_from, not 'resume') scored in this run as "before"
val_data: str = ''  # held-out text file or .bin of uint16 token ids: perplexity, bits/byte, top-1/5 accuracy
val_tokens: int = 20000  # predict at most this many val_data tokens (0 = all); GPT-2 124M: ~80 s, 2 CPU cores
# (~150 CPU-s; --dtype=bfloat16 with avx512_bf16: 1.7-1.8x faster, perplexity +0.004%;
#  docs/eval.md: how measured)
val_stride: int = 0  # tokens predicted per window of block_size; 0 = block_size // 2 (each sees >= half)
name: str = ''  # results/eval_<name>.*; '' = named after the model
results_dir: str = 'results'  # where the result files go
keep_earlier: bool = True  # an earlier eval_<name>.* set with other numbers is kept as eval_<name>_<its time>.*
verbose: bool = False  # print every pair's exact response tokens with their log-probs
show: bool = False  # also open the charts in a window, when a display exists
html: bool = True  # also write results/eval_<name>.html: every token shaded by probability, in a browser
# -----------------------------------------------------------------------------

_written = []  # the result files, once written (what a Ctrl-C after that leaves)

# sample.py settings that eval.py accepts and ignores, so that any sample.py command line runs here unchanged
# (the configurator skips them with a note; scoring draws no random numbers, so seed is among them)
IGNORED_SETTINGS = ('start', 'num_samples', 'max_new_tokens', 'seed', 'show_probs', 'probs_top_k',
                    'stop_at_eot', 'fixed_response', 'compare_temperatures', 'compare_step', 'num_beams',
                    'length_penalty', 'no_repeat_ngram_size', 'early_stopping', 'chart_samples',
                    'chart_workers')


def _model_and_tokenizer(model, tok, **load_kw):
    """(model, tok, description, autocast ctx, dtype) of a GPT + tokenizer, a load.Loaded or an init_from."""
    if isinstance(model, str):
        model = load_model(model, **load_kw)
    if hasattr(model, 'tok') and hasattr(model, 'model'):  # load.Loaded
        return model.model, model.tok, model.source, model.ctx, model.dtype
    if tok is None:
        raise ValueError("score_pairs(model=<GPT>) needs tok=<tokenizer.Tokenizer> too (or pass a load.Loaded "
                         "or an init_from)")
    dtype = str(model.lm_head.weight.dtype).replace('torch.', '')
    return model, tok, type(model).__name__, nullcontext(), dtype


def score_pairs(eval_data='eval_data.json', model='resume', tok=None, *, join='auto', batch_size=16,
                temperature=1.0, top_k=None, top_p=1.0, verbose=False, quiet=False, out_dir='out',
                device='auto', dtype='float32', progress=True):
    """Score every prompt/response pair of eval_data with a model; print the table and return an EvalRun.

    eval_data: a JSON file path, or a list of pairs already in memory (dicts or [prompt, response]).
    model: a GPT (then give tok), a load.Loaded, or an init_from string ('gpt2', 'resume' with out_dir,
    a Hugging Face folder, a checkpoint), loaded on device/dtype.

    For each pair this is exactly model.generate(prompt_ids, fixed_response=response_ids): generate()
    hands a fixed response to model.score(), which is called here directly for batch_size pairs at a
    time, so N pairs take ceil(N / batch_size) padded forward passes. progress: a bar on stderr while
    more than one batch is scored."""
    model, tok, source, ctx, dtype = _model_and_tokenizer(model, tok, out_dir=out_dir, device=device,
                                                          dtype=dtype)
    if isinstance(eval_data, str):
        path, pairs = eval_data, read_pairs(eval_data)
    else:
        path, pairs = '<in memory>', check_pairs(eval_data, 'eval_data')
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be an int >= 1, got {batch_size!r}")
    block_size = model.config.block_size
    prompts, responses, notes, joined = [], [], [], []
    for i, p in enumerate(pairs, 1):
        prompt, response = join_texts(p['prompt'], p['response'], join)
        joined.append((prompt, response))
        try:
            prompt_ids, response_ids, note = tokenize_pair(tok, prompt, response)
        except ValueError as e:  # a character vocabulary without some character of the pair
            raise EvalDataError(f"{path}: pair {i} cannot be encoded: {e}") from None
        n = len(prompt_ids) + len(response_ids)
        if n > block_size:  # score() slides a window, as generate() conditions a long text
            note = '; '.join(filter(None, [note, (
                f"scored past the block size: {n} tokens (prompt {len(prompt_ids)} + response "
                f"{len(response_ids)}); each token after position {block_size} sees only the {block_size} "
                "tokens before it, as generation would")]))
        prompts.append(prompt_ids)
        responses.append(response_ids)
        notes.append(note)

    sampling = not is_model_distribution(temperature, top_k, top_p)
    results, passes = [], 0
    text = {}  # token id -> its text: one shared string per distinct token, not one per occurrence
    def token_texts(ids):
        return [text[t] if t in text else text.setdefault(t, tok.token_text(t)) for t in ids]
    from tqdm import tqdm  # to stderr; only when there is more than one batch to wait for
    bar = tqdm(total=len(pairs), desc='scoring', unit='pair', leave=False,
               disable=not progress or len(pairs) <= batch_size)
    with ctx, bar:
        for b in range(0, len(pairs), batch_size):
            # each token's rank and the model's top choice come from the same pass; each batch's tensors
            # become the pairs' plain lists at once, so memory holds one batch of tensors at a time
            batch = slice(b, b + batch_size)
            scored = model.score(prompts[batch], responses[batch], temperature, top_k, top_p)
            passes += 1
            for i, s in enumerate(scored, b + 1):
                p = pairs[i - 1]
                results.append(PairResult(
                    index=i, prompt=p['prompt'], response=p['response'], prompt_ids=s.prompt,
                    response_ids=s.tokens, tokens=token_texts(s.tokens), logprobs=s.logprobs.tolist(),
                    ranks=s.ranks.tolist(), expected=token_texts(s.top1.tolist()),
                    sample_logprobs=s.sample_logprobs.tolist() if sampling else None, note=notes[i - 1],
                    extra=p['extra'], joined=joined[i - 1]))
            bar.update(len(scored))
    settings = dict(eval_data=path, join=join, temperature=temperature, top_k=top_k, top_p=top_p,
                    batch_size=batch_size, device=str(model.lm_head.weight.device), dtype=dtype,
                    block_size=block_size)
    run = EvalRun(source, settings, results, passes=passes)
    if not quiet:
        print(pairs_report(run, verbose, tok))
    return run


def default_name(init_from, out_dir='out'):
    """results/eval_<name>: 'gpt2', the out_dir's name for 'resume', a folder's or file's name
    (out/ckpt.pt: 'out'; out/ckpt_last.pt: 'out_last')."""
    where = out_dir if init_from == 'resume' else init_from
    base = os.path.basename(os.path.normpath(where))
    if base in ('ckpt.pt', 'ckpt_last.pt'):
        base = os.path.basename(os.path.dirname(os.path.abspath(where))) + ('_last' if 'last' in base else '')
    return re.sub(r'[^\w.-]+', '_', os.path.splitext(base)[0] if base.endswith('.pt') else base) or 'model'


# -----------------------------------------------------------------------------

def main():
    if compare_to and compare_init_from:
        raise UserError("give either --compare_to (an earlier results file) or --compare_init_from "
                        "(a model), not both")
    if compare_init_from == 'resume':
        raise UserError("--compare_init_from=resume would load the same out_dir as init_from; give the "
                        "checkpoint's folder or file instead (e.g. --compare_init_from=out/ckpt.pt)")
    if join not in JOIN_MODES:
        raise UserError(f"join={join!r}: use one of {', '.join(JOIN_MODES)}")
    t0 = time.time()
    # everything that can be checked before loading a model is checked first
    check_sampling(temperature, top_k, top_p)
    read_pairs(eval_data)
    if val_data:
        check_val_path(val_data)
    before = read_results(compare_to) if compare_to else None
    kw = dict(join=join, batch_size=batch_size, temperature=temperature, top_k=top_k, top_p=top_p)
    loaded = load_model(init_from, out_dir, device, dtype, compile)
    print(f"model: {loaded.source} on {loaded.device} ({loaded.dtype})")
    run = score_pairs(eval_data, loaded, verbose=verbose, **kw)
    models = [(run, loaded)]
    if compare_init_from:
        loaded_before = load_model(compare_init_from, out_dir, device, dtype, compile)
        print(f"\nbefore model: {loaded_before.source} on {loaded_before.device} ({loaded_before.dtype})")
        before = score_pairs(eval_data, loaded_before, verbose=verbose, **kw)
        models.insert(0, (before, loaded_before))
    c = compare(before, run) if before is not None else None  # same pairs? checked before the slow part
    if val_data:
        for r, m in models:
            ids = read_val_ids(val_data, m.tok, val_tokens)
            t1 = time.time()
            r.val = evaluate_val(m.model, m.tok, ids, val_data, val_stride, batch_size, m.ctx)
            print(f"\n{r.model}: held-out data scored in {time.time() - t1:.1f}s")
    if c is None and run.val is not None:
        print('\n' + val_report([('model', run)]))
    if c is not None:
        print('\n' + compare_report(c, verbose))
    paths = write_results(run, c, results_dir, name or default_name(init_from, out_dir), show, html, keep_earlier)
    _written.extend(paths)
    print(f"\nwrote {', '.join(paths)} ({time.time() - t0:.1f}s)")
    if show:
        from nanoprobs.plots.common import show_windows
        show_windows()  # last: every file is written and every number printed


if __name__ == '__main__':
    from configurator import configure, run_main
    configure(globals())
    try:
        run_main(main)
    except KeyboardInterrupt:  # Ctrl-C: the result files appear only at the very end, all at once
        print(f"\ninterrupted; {'the result files were already written' if _written else 'nothing written'}",
              file=sys.stderr)
        sys.exit(130)
