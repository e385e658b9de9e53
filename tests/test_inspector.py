"""The inspector's numbers against independent computations: the logit lens (its last row is the model
distribution), attention (Capture's weights: rows sum to 1, nothing above the diagonal), attribution
(integrated gradients' completeness; gradient x input), GLTR's summary, joined characters, beams' recorded
steps, the report's settings, tools/trace.py and tools/gltr.py."""
import json
import math
import re
import runpy
import sys

import pytest
import torch

from conftest import ROOT, tiny_model, write_ckpt
from nanoprobs import gltr, html_report, inspector
from nanoprobs.attention import stack, token_attention
from nanoprobs.decoding import generate, score
from nanoprobs.formatting import format_prob
from nanoprobs.lens import read_rows, token_lens
from model import Capture

pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.one_thread
IDS = [464, 3797, 3332, 319, 262, 2603, 13, 383, 3290, 1110, 373, 257]


def plain_logprobs(m, ids):
    """log_softmax of a plain forward pass (no capture, fused attention), float64: (T, V)."""
    with torch.no_grad():
        return m(torch.tensor([ids]), all_logits=True)[0][0].double().log_softmax(-1)


def test_lens_last_row_is_the_model_distribution_and_row_0_reads_the_embeddings():
    m = tiny_model(1).double()
    positions = [1, 5, len(IDS) - 1]
    lens = token_lens(m, IDS, positions)
    ref = plain_logprobs(m, IDS)  # (T, V)
    with torch.no_grad():
        emb = m.transformer.wte(torch.tensor(IDS)) + m.transformer.wpe(torch.arange(len(IDS)))
        ref0 = m.lm_head(m.transformer.ln_f(emb)).double().log_softmax(-1)  # read straight off the input
    for tl, j in zip(lens, positions):
        assert tl.position == j and len(tl.logprobs) == 3  # embeddings, block 0, block 1
        for row, r in ((-1, ref[j - 1]), (0, ref0[j - 1])):
            assert tl.logprobs[row] == pytest.approx(float(r[IDS[j]]), abs=1e-12)
            assert tl.ranks[row] == int((r > r[IDS[j]]).sum()) + 1
            assert tl.top_ids[row] == int(r.argmax()) and tl.top_logprobs[row] == pytest.approx(float(r.max()), abs=1e-12)
    # on the page: the last row's probability text is the token's own, from score()
    s = score(m, [IDS[:4]], [IDS[4:]], details=3)[0]
    doc = html_report.sample_doc(s, _Tok(), 'x')
    info = inspector.add_panels([doc], m, _Tok(), inspector.Panels(), progress=None)
    assert info['rows'] == ['embeddings', 'block 0', 'block 1']
    for e in doc['tokens']:
        top, top_p, lp, p, rank = e['lens'][-1]
        assert (p, rank) == (e['prob'], e['rank']) and top_p == e['alternatives'][0]['prob']


def test_float32_lens_log_probs_equal_float64_log_softmax_of_the_same_logits():
    """read_rows sums exp(logit - max) in float32: within 1e-6 of float64 log_softmax of the same logits."""
    m = tiny_model(1)
    torch.manual_seed(0)
    h = torch.randn(len(IDS), m.config.n_embd) * 3  # (n, C) states
    chosen = torch.tensor(IDS)
    with torch.no_grad():
        ref = m.unembed(m.transformer.ln_f(h)).double().log_softmax(-1)  # (n, V)
        top_id, top_lp, lp, rank = read_rows(m, h, chosen)
    assert torch.equal(top_id, ref.argmax(-1))
    assert torch.allclose(top_lp, ref.max(-1).values, atol=1e-6, rtol=0)
    assert torch.allclose(lp, ref.gather(-1, chosen[:, None])[:, 0], atol=1e-6, rtol=0)
    assert torch.equal(rank, (ref > ref.gather(-1, chosen[:, None])).sum(-1) + 1)


class _Tok:
    """A tokenizer for tiny vocabularies: token i is 't<i> '."""
    eot = None

    def token_text(self, i):
        return f"t{i} "

    def decode(self, ids):
        return ''.join(map(self.token_text, ids))

    def pieces(self, ids):
        return [(i, i + 1, self.token_text(t)) for i, t in enumerate(ids)]


def test_attention_panel_is_captures_weights_rounded():
    m = tiny_model(2).double()
    cap = Capture()
    with torch.no_grad():
        m(torch.tensor([IDS]), capture=cap)
    att = stack(cap.attn)  # (L, H, T, T)
    assert torch.allclose(att.sum(-1), torch.ones(att.shape[:-1]), atol=1e-6) and (att.triu(1) == 0).all()
    # layer 0 independently, from the weights: softmax(q k^T / sqrt(hs)) over the keys up to the query
    with torch.no_grad():
        x = m.transformer.wte(torch.tensor(IDS)) + m.transformer.wpe(torch.arange(len(IDS)))
        q, k, _ = m.transformer.h[0].attn.c_attn(m.transformer.h[0].ln_1(x)).split(32, dim=-1)
        q, k = (t.view(len(IDS), 4, 8).transpose(0, 1) for t in (q, k))  # (H, T, hs)
        w = (q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(torch.ones(len(IDS), len(IDS)).triu(1).bool(),
                                                                   -math.inf).softmax(-1)
    assert torch.allclose(att[0], w.float(), atol=1e-6)
    j = 7  # the token at position 7 is predicted by query 6, over keys 0..6
    row = token_attention(att, j)
    assert row.shape == (2, 4, 7) and torch.equal(row[0], att[0, :, 6, :7])
    got = inspector.attention_json(row)
    for layer in range(2):
        for h, want in enumerate(torch.cat((row[layer].mean(0, keepdim=True), row[layer]))):
            flat = got[layer][h]
            pairs = dict(zip(flat[::2], flat[1::2]))
            assert pairs == {kk: round(1000 * float(v)) for kk, v in enumerate(want) if round(1000 * float(v)) >= 1}


def test_integrated_gradients_complete_and_gradient_x_input():
    pytest.importorskip('captum', reason="attribution needs Captum: pip install captum")
    from nanoprobs.attribution import attribute
    m = tiny_model(3)
    pos = 9
    a = attribute(m, IDS, pos, 'ig', steps=16, eot=50256)
    lp = float(plain_logprobs(m, IDS)[pos - 1, IDS[pos]])
    base = [50256] * pos + IDS[pos:]  # the baseline: <|endoftext|> at every context position
    blp = float(plain_logprobs(m, base)[pos - 1, IDS[pos]])
    assert len(a.scores) == pos and a.start == 0
    assert a.logprob == pytest.approx(lp, abs=1e-5) and a.baseline_logprob == pytest.approx(blp, abs=1e-5)
    # completeness: the scores add up to the change of log-prob from the baseline, within 1e-3 nats
    assert abs(blp - lp) > 0.1 and sum(a.scores) == pytest.approx(lp - blp, abs=1e-3)
    assert a.gap == pytest.approx(sum(a.scores) - (a.logprob - a.baseline_logprob), abs=1e-12)
    assert max(map(abs, a.scores)) > 10 * min(map(abs, a.scores))  # the tokens differ
    # gradient x input, by hand: d log p / d embedding, dotted with the embedding
    g = attribute(m, IDS, pos, 'gxi')
    emb = m.transformer.wte(torch.tensor([IDS[:pos]])).detach().requires_grad_(True)
    x = m.transformer.drop(emb + m.transformer.wpe(torch.arange(pos)))
    for block in m.transformer.h:
        x = block(x)
    out = m.lm_head(m.transformer.ln_f(x))[0, -1].double().log_softmax(-1)[IDS[pos]]
    (grad,) = torch.autograd.grad(out, emb)
    assert g.scores == pytest.approx((grad * emb).sum(-1)[0].double().tolist(), abs=1e-5) and g.gap is None
    j = a.to_json()
    assert j['scores'] == [round(s, 4) for s in a.scores] and j['method'] == 'ig' and j['steps'] == 16
    with pytest.raises(ValueError, match='method'):
        attribute(m, IDS, pos, 'saliency')
    with pytest.raises(ValueError, match='position'):
        attribute(m, IDS, 0)


def test_panels_keep_the_first_tokens_past_a_size_and_say_so():
    m = tiny_model(0)
    s = score(m, [IDS[:2]], [IDS[2:] * 4], details=2)[0]  # 2 + 40 tokens: past block_size (32)
    docs = [html_report.sample_doc(s, _Tok(), 'x')]
    info = inspector.add_panels(docs, m, _Tok(), inspector.Panels(max_lens_cells=3 * 5, max_attention_numbers=400),
                                progress=None)
    toks = docs[0]['tokens']
    assert [('lens' in t) for t in toks[:6]] == [True] * 5 + [False]
    n_att = sum('att' in t for t in toks)
    assert 0 < n_att < 31 and all('att' in t for t in toks[:n_att])
    assert not any('lens' in t or 'att' in t for t in toks[31:])  # context past block_size
    notes = ' '.join(info['notes'])
    assert 'first 5 tokens' in notes and f"first {n_att} tokens" in notes and '9 tokens came after block_size' in notes


def test_gltr_summary_and_whole_text_scoring(gpt2_tok):
    g = gltr.summary([1, 10, 11, 100, 101, 1000, 1001, 5], [-0.1, -1, -2, -3, -4, -5, -8, math.log(0.75)],
                     html_report.probability_scale())
    assert [(n, c, sh) for n, c, sh in g['ranks']] == [('top 10', 3, '37.5%'), ('top 100', 2, '25.0%'),
                                                       ('top 1000', 2, '25.0%'), ('beyond', 1, '12.5%')]
    assert [c for _, c in g['histogram']] == [1, 1, 2, 0, 1, 1, 0, 2]
    assert g['mean_logprob'] == f"{math.fsum([-0.1, -1, -2, -3, -4, -5, -8, math.log(0.75)]) / 8:.4f}"
    m = tiny_model(0)
    text = 'Once upon a time, “there” was a fox.'
    s = gltr.score_text(m, gpt2_tok, text)
    ids = gpt2_tok.encode(text)
    ref = plain_logprobs(m, [gpt2_tok.eot] + ids)[:-1]  # the token after <|endoftext|> is scored too
    assert s.prompt == [gpt2_tok.eot] and s.tokens == ids
    assert s.logprobs.tolist() == pytest.approx(ref.gather(-1, torch.tensor(ids)[:, None])[:, 0].tolist(), abs=1e-5)
    ranks = [int((r > r[t]).sum()) + 1 for r, t in zip(ref, ids)]
    assert s.ranks.tolist() == ranks
    page = html_report.gltr_page([s], ['fox'], gpt2_tok, {})
    doc = page['docs'][0]
    assert doc['gltr'] == gltr.summary(ranks, s.logprobs.tolist(), html_report.probability_scale()) and page['mode'] == 'rank'
    assert page['table']['rows'][0][2:6] == [sh for _, _, sh in doc['gltr']['ranks']]
    # the curly quotes are two tokens each here: joined, with the pair's probability
    joined = {t: (a, b, lp) for a, b, t, lp, _ in doc['joined']}
    a, b, lp = joined[' “']
    assert b - a == 2 and lp == pytest.approx(math.fsum(s.logprobs[a:b].tolist()), abs=1e-12)
    assert [doc['tokens'][k]['text'] for k in (a, b - 1)] == [gpt2_tok.token_text(ids[a]), gpt2_tok.token_text(ids[a + 1])]


def test_beam_steps_recorded_and_report_settings():
    from nanoprobs.beams import beam_search
    m = tiny_model(1)
    plain = beam_search(m, IDS[:3], 5, num_beams=3, no_repeat_ngram_size=2)
    rec = beam_search(m, IDS[:3], 5, num_beams=3, no_repeat_ngram_size=2, details=4)
    assert [b.tokens for b in rec] == [b.tokens for b in plain] and [b.score for b in rec] == [b.score for b in plain]
    for b in rec:
        assert [st.chosen for st in b.steps] == b.tokens
        assert [st.chosen_logprob for st in b.steps] == b.logprobs.tolist()  # the same numbers, exactly
        assert all(len(st.top_ids) == 4 and st.top_sample_logprobs is None for st in b.steps)
    values = dict(init_from='resume', out_dir='out-x', start='Hi', num_samples=5, max_new_tokens=9, temperature=0.8,
                  top_k=200, top_p=1.0, seed=3, stop_at_eot=False, fixed_response=' Paris', device='auto', dtype='auto')
    forced = html_report.report_settings(values, 'cuda:0', 'bfloat16', forced=True)
    assert forced == dict(init_from='resume', out_dir='out-x', start='Hi', temperature=0.8, top_k=200, top_p=1.0,
                          fixed_response=' Paris', device='cuda:0', dtype='bfloat16')
    sampled = html_report.report_settings({**values, 'init_from': 'gpt2', 'fixed_response': ''}, 'cpu', 'float32')
    assert 'out_dir' not in sampled and 'fixed_response' not in sampled and sampled['num_samples'] == 5


def test_the_page_formats_a_huge_perplexity_as_the_terminal_does(gpt2_tok):
    s = generate(tiny_model(0), torch.tensor([IDS[:3]]), 3, temperature=1.0)[0]
    s.logprobs = torch.tensor([-60.0, -70.0, -40.0], dtype=torch.float64)  # perplexity e^56.7
    assert dict(html_report.sample_totals(s))['perplexity'] == f"{math.exp(170 / 3):.4g}"  # not 28 digits


def run_inprocess(script, *args, monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', [script, *args])
    capsys.readouterr()
    if script.endswith('.py'):
        runpy.run_path(str(ROOT / script), run_name='__main__')
    else:
        monkeypatch.delitem(sys.modules, script, raising=False)  # run it fresh, as python -m would
        runpy.run_module(script, run_name='__main__', alter_sys=True)
    return capsys.readouterr().out


def test_trace_cites_model_py_and_shows_the_models_own_tensors(tmp_path, gpt2_tok, monkeypatch, capsys):
    from tools import trace
    lines = open(ROOT / 'model.py', encoding='utf-8').read().splitlines()
    for step, (n, code) in trace.source_lines().items():
        assert code in lines[n - 1]
    m = tiny_model(0)
    ids = gpt2_tok.encode('The cat sat on')
    md = trace.trace_markdown(m, gpt2_tok, ids, head=1)
    cap = Capture()
    with torch.no_grad():
        logits = m(torch.tensor([ids]), all_logits=True, capture=cap)[0]
    order = [r.split(' | ')[0][2:] for r in md.splitlines() if re.match(r'\| .* \| \d+: `', r)]
    assert order[:4] == ['wte(idx): token embeddings', 'wpe(pos): position embeddings',
                         'x = token + position embeddings', 'block 0: ln_1(x)']
    assert order[-2:] == ['ln_f(x): the final layer norm', 'unembed(x): logits over the vocabulary']
    k = order.index('block 0: c_attn(x) = [q \\| k \\| v]')
    assert [o.split(': ')[1] for o in order[k + 1:k + 4]] == ['k in heads, (B, nh, T, hs)', 'q in heads, (B, nh, T, hs)',
                                                              'v in heads, (B, nh, T, hs)']

    def values(name):
        row = next(r for r in md.splitlines() if r.startswith(f"| {name} |"))
        return [float(v) for v in row.split(' | ')[3].split(', ')]
    assert values('block 1: x + MLP (residual add), the block output') == pytest.approx(
        cap.resid[2][0, -1, :4].tolist(), abs=5e-4)
    assert values('unembed(x): logits over the vocabulary') == pytest.approx(logits[0, -1, :4].tolist(), abs=5e-4)
    head_rows = re.findall(r'^\| `[^|]*` \| ([\d. |]+) \|$', md, re.M)
    assert [float(x) for x in head_rows[len(ids) - 1].split(' | ')] == pytest.approx(
        cap.attn[0][0, 1, -1].tolist(), abs=5e-3)  # block 0, head 1, the last query
    monkeypatch.chdir(tmp_path)
    write_ckpt(tmp_path / 'out')
    out = run_inprocess('tools.trace', '--init_from=resume', '--out_dir=out', '--start=Once upon', '--blocks=-1',
                        monkeypatch=monkeypatch, capsys=capsys)
    assert 'block 1: ln_1(x)' in out and 'block 0: ln_1(x)' not in out and (tmp_path / 'results' / 'trace_out.md').exists()


def test_sample_report_attribution_flag_and_gltr_tool(tmp_path, gpt2_tok, monkeypatch, capsys):
    pytest.importorskip('captum', reason="attribution needs Captum: pip install captum")
    monkeypatch.chdir(tmp_path)
    write_ckpt(tmp_path / 'out')
    out = run_inprocess('sample.py', '--out_dir=out', '--start=Once upon a time', '--num_samples=1',
                        '--max_new_tokens=3', '--device=cpu', '--show=False', '--html_attribution=gxi',
                        monkeypatch=monkeypatch, capsys=capsys)
    assert re.search(r'attribution: 3 tokens x 1 forward\+backward pass in [\d.]+ s', out)
    path, = (tmp_path / 'results').glob('sample_*/index.html')
    d = json.loads(re.search(r'id="report-data">(.*?)</script>', path.read_text(encoding='utf-8'), re.S).group(1))
    assert dict(d['settings'])['device'] == "'cpu'" and d['inspect']['attribution']['method'] == 'gxi'
    assert [len(t['attr']['scores']) for t in d['docs'][0]['tokens']] == [4, 5, 6]
    (tmp_path / 'a.txt').write_text('Once upon a time there was a fox.', encoding='utf-8')
    out = run_inprocess('tools.gltr', '--init_from=resume', '--out_dir=out', '--files=a.txt', '--text=The end.',
                        '--device=cpu', monkeypatch=monkeypatch, capsys=capsys)
    d = json.loads(re.search(r'id="report-data">(.*?)</script>',
                             (tmp_path / 'results' / 'gltr_out' / 'index.html').read_text(encoding='utf-8'), re.S).group(1))
    assert [doc['title'] for doc in d['docs']] == ['a.txt', 'text'] and 'a.txt' in out
    assert all('lens' in t for t in d['docs'][1]['tokens']) and d['mode'] == 'rank'


def test_eval_page_joins_characters_from_the_token_texts(gpt2_tok):
    """eval's results keep each token's text (<E2 80> for a piece of a character): the page joins them by
    the tokenizer's rule, with the run's probability, and adds GLTR's summary."""
    ids = gpt2_tok.encode(' said “no”')
    lps = [-1.0, -2.0, -0.5, -3.0, -0.25, -0.125]
    ranks = [1, 5, 2, 40, 1, 1]
    pair = dict(index=1, prompt='He', response=' said “no”', prompt_ids=gpt2_tok.encode('He'), response_ids=ids,
                tokens=[gpt2_tok.token_text(i) for i in ids], logprobs=lps, ranks=ranks, expected=['x'] * 6,
                logprob=sum(lps), perplexity=math.exp(-sum(lps) / 6), greedy=False)
    doc = html_report.eval_page(dict(model='m', pairs=[pair], totals={}))['docs'][0]
    assert [[a, b, t] for a, b, t, _, _ in doc['joined']] == [[a, b, t] for a, b, t in gpt2_tok.pieces(ids) if b - a > 1]
    assert [p for *_, p in doc['joined']] == [format_prob(lps[1] + lps[2]), format_prob(lps[4] + lps[5])]
    assert doc['gltr'] == gltr.summary(ranks, lps, html_report.probability_scale())
