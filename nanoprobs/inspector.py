"""
The page inspector's panels as JSON-ready data: what each layer predicted (lens.py), where the prediction
looked (attention.py) and, when asked, which earlier tokens made it likely (attribution.py).

    add_panels(docs, model, tok, Panels(attribution='ig'))   # the static report: into each doc's tokens
    token_panels(model, tok, ids, position)                  # the live app (POST /api/inspect): one token
                                                             # (and attribution.attribute: /api/attribute)

The token at sequence position j (ids = prompt + response) is predicted at position j - 1, so every panel
shows that position: the lens reads its residual stream, attention is its query row over keys 0..j-1,
attribution explains log p(ids[j] | ids[:j]). A token's fields (html_report.py's data shape):
  lens  one row per row_names() row: [top token text, its probability text, the token's log-prob (for the
        bar, rounded to 4 decimals), its probability text, its rank]; the last row is the model distribution
  att   one entry per layer: [mean over heads, head 0, head 1, ...], each a flat list [key, weight, key,
        weight, ...] of the keys (sequence positions) whose weight, in thousandths rounded, is >= 1
  attr  attribution.Attribution.to_json() (scores of ids[start:j])
A page that would grow past the stated sizes keeps the panels of the first N tokens of each text and says so.
Tokens whose context is longer than block_size (generation cropped it) have no lens or attention.
"""

import time
from dataclasses import dataclass

import torch

from model import Capture
from nanoprobs.attention import stack, token_attention
from nanoprobs.attribution import METHODS, STEPS, attribute
from nanoprobs.formatting import format_prob
from nanoprobs.lens import position_states, row_names, states_lens, token_lens

MAX_LENS_CELLS = 200_000  # layer rows x tokens of lens data in one page (about 7 MB)
MAX_ATTENTION_NUMBERS = 1_000_000  # numbers of attention data in one page (about 4 MB)
LENS_BATCH = 256  # tokens (of one or more texts) read through the unembedding together


@dataclass
class Panels:
    """Which panels the static report holds, and their limits."""
    lens: bool = True
    attention: bool = True
    attribution: str = ''  # '' (off), 'ig' or 'gxi' (attribution.METHODS): backward passes, so asked for
    steps: int = STEPS  # integrated gradients' steps
    max_lens_cells: int = MAX_LENS_CELLS
    max_attention_numbers: int = MAX_ATTENTION_NUMBERS


@dataclass
class _LensWork:
    """One text's tokens waiting for their lens: read with other texts' in one larger unembedding product."""
    tokens: list          # the doc's token dicts, which get a 'lens' field
    prompt_len: int       # tokens[i] is at sequence position prompt_len + i
    positions: list       # the sequence positions to read
    ids: list             # the token at each position
    states: torch.Tensor  # (rows, len(positions), C): the residual stream before each


def lens_json(tl, tok):
    return [[tok.token_text(int(i)), format_prob(tlp), round(lp, 4), format_prob(lp), int(r)]
            for i, tlp, lp, r in zip(tl.top_ids, tl.top_logprobs, tl.logprobs, tl.ranks)]


def attention_json(w):
    """w (n_layer, n_head, j): one query's weights -> per layer [mean row, head rows...] of [key, thousandths]."""
    rows = torch.cat((w.mean(1, keepdim=True), w), 1)  # (L, 1 + H, j)
    q = (rows.double() * 1000).round().long()  # (L, 1 + H, j)
    out = []
    for layer in q.tolist():
        out.append([[x for k, v in enumerate(row) if v >= 1 for x in (k, v)] for row in layer])
    return out


def numbers(att):
    return sum(len(r) for layer in att for r in layer)


def _forward(model, ids):
    cap = Capture()
    x = torch.tensor([ids], device=model.lm_head.weight.device)  # (1, T)
    with torch.inference_mode():
        model(x, capture=cap)
    return cap


def token_panels(model, tok, ids, position):
    """The lens and attention panels of the token ids[position] (1 <= position < len(ids), position <=
    block_size), for the live app: {position, rows, lens, att}."""
    if not 1 <= position < len(ids) or position > model.config.block_size:
        raise ValueError(f"position must be in [1, {min(len(ids) - 1, model.config.block_size)}], got {position}")
    cap = _forward(model, ids[:position])
    tl = token_lens(model, ids, [position], cap.resid)[0]
    return dict(position=position, rows=row_names(model.config.n_layer), lens=lens_json(tl, tok),
                att=attention_json(token_attention(stack(cap.attn), position)))


def add_panels(docs, model, tok, panels, progress=print):
    """Add the panels' fields to the tokens of each doc (html_report's doc dicts, with prompt_ids and
    tokens) and return the page's 'inspect' entry: the lens's row names and what was included (notes)."""
    if not docs:
        return None
    bs, n_rows = model.config.block_size, model.config.n_layer + 1
    lens_left = panels.max_lens_cells // len(docs) if panels.lens else 0
    att_left = panels.max_attention_numbers // len(docs) if panels.attention else 0
    t0, cut_lens, cut_att, long_ctx, n_attr, t_attr = time.perf_counter(), [], [], 0, 0, 0.0
    eot = getattr(tok, 'eot', None)
    pending = []  # _LensWork of texts whose lens is not read yet

    def read_pending():
        states = torch.cat([w.states for w in pending], 1)  # (rows, N, C)
        chosen = torch.tensor([i for w in pending for i in w.ids], device=states.device)  # (N,)
        lens = iter(states_lens(model, states, chosen, [j for w in pending for j in w.positions]))
        for w in pending:
            for _ in w.positions:
                tl = next(lens)
                w.tokens[tl.position - w.prompt_len]['lens'] = lens_json(tl, tok)
        pending.clear()

    for doc in docs:
        P, toks = len(doc['prompt_ids']), doc['tokens']
        ids = list(doc['prompt_ids']) + [t['id'] for t in toks]
        inside = [ti for ti in range(len(toks)) if P + ti <= bs]  # context fits in one block
        long_ctx += len(toks) - len(inside)
        n_lens = min(len(inside), lens_left // n_rows)
        if n_lens < len(inside):
            cut_lens.append(n_lens)
        if inside and (n_lens or att_left):
            cap = _forward(model, ids[:P + inside[-1]])
            if n_lens:  # read later, together with other texts' tokens: one larger unembedding product
                positions = [P + ti for ti in inside[:n_lens]]
                pending.append(_LensWork(toks, P, positions, [ids[j] for j in positions],
                                         position_states(cap.resid, positions)))
                if sum(len(w.positions) for w in pending) >= LENS_BATCH:
                    read_pending()
            if att_left:
                att, used, k = stack(cap.attn), 0, 0
                for k, ti in enumerate(inside):
                    a = attention_json(token_attention(att, P + ti))
                    if used + numbers(a) > att_left:
                        cut_att.append(k)
                        break
                    toks[ti]['att'] = a
                    used += numbers(a)
        if panels.attribution:
            for ti, t in enumerate(toks):
                a = attribute(model, ids, P + ti, panels.attribution, panels.steps, eot)
                t['attr'] = a.to_json()
                n_attr, t_attr = n_attr + 1, t_attr + a.seconds
                if progress and n_attr % 50 == 0:
                    progress(f"attribution: {n_attr} tokens in {t_attr:.0f} s")
    if pending:
        read_pending()
    secs = time.perf_counter() - t0
    notes = []
    if cut_lens:
        notes.append(f"the logit lens is kept for the first {min(cut_lens)} tokens of a text (this page "
                     f"holds at most {panels.max_lens_cells:,} lens cells)")
    if cut_att:
        notes.append(f"attention is kept for the first {min(cut_att)} tokens of a text (this page holds "
                     f"at most {panels.max_attention_numbers:,} attention numbers); serve.py shows any token's")
    if long_ctx:
        notes.append(f"{long_ctx} tokens came after block_size ({bs}) tokens of context: no lens or attention")
    out = dict(rows=row_names(model.config.n_layer), lens=panels.lens, attention=panels.attention,
               notes=notes, seconds=round(secs, 2))
    if panels.attribution:
        steps = panels.steps if panels.attribution == 'ig' else 1
        out['attribution'] = dict(method=panels.attribution, method_name=METHODS[panels.attribution],
                                  steps=steps, tokens=n_attr,
                                  seconds=round(t_attr, 2),
                                  cost=f"{n_attr} tokens x {steps} forward+backward pass{'es' * (steps > 1)} "
                                       f"in {t_attr:.1f} s")
    if progress:
        progress(cost_line(out))
    return out


def cost_line(info):
    """One line for the terminal: what the panels cost."""
    if not info:
        return ''
    line = f"inspector panels: {info['seconds']:.1f} s"
    if info.get('attribution'):
        line += f" (attribution: {info['attribution']['cost']})"
    return '; '.join([line] + info['notes'])
