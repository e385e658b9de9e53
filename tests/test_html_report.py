"""html_report.py: the data inside a report equals the Sample numbers and eval's JSON; escaping; the CLI hooks."""
import contextlib
import functools
import json
import math
import re
import runpy
import sys
import types

import pytest
import torch

from nanoprobs import html_report
from conftest import ROOT, tiny_model, write_ckpt
from nanoprobs.beams import beam_search
from nanoprobs.decoding import generate
from nanoprobs.formatting import format_prob, format_ratio

INJ = '</script><img src=x onerror="alert(1)">&\'"\u2028'


pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.one_thread


def page_data(path):
    """The JSON embedded in a report file, parsed back."""
    text = open(path, encoding='utf-8').read()
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    return json.loads(m.group(1))


def test_script_json_escapes_everything_that_could_end_the_element():
    obj = {'t': INJ, 'x': [1.5, None, '<!--', ']]>']}
    s = html_report.script_json(obj)
    assert not set('<>&\u2028\u2029') & set(s)
    assert json.loads(s) == obj
    with pytest.raises(ValueError):
        html_report.script_json({'x': float('nan')})  # num() turns -inf/nan into null first


def test_render_inlines_everything_and_allows_only_its_own_script():
    text, policy = html_report.render(dict(kind='sample', title=INJ, settings=[], docs=[]))
    assert text.count('</script>') == 5  # the scale, the data element and three scripts: the title cannot end any
    assert INJ not in text and '<img' not in text
    assert not re.search(r'(src|href)=["\']?(https?:)?//', text)  # nothing loaded from the network
    for name in ('page.js', 'inspector.js', 'report.js'):
        js = open(html_report.os.path.join(html_report.WEB, name), encoding='utf-8').read()
        assert f"<script>{js}</script>" in text and html_report._sha(js) in policy
        assert 'innerHTML' not in js and 'insertAdjacentHTML' not in js and 'eval(' not in js
    assert "default-src 'none'" in policy and "connect-src 'none'" in policy and 'unsafe' not in policy


def test_only_the_live_page_holds_the_live_app():
    """The static report carries none of the live app's script or form; serve.py's page carries both, and
    the shared script, but not the report's."""
    web = lambda name: open(html_report.os.path.join(html_report.WEB, name), encoding='utf-8').read()
    live_js, report_js, page_js, form = web('live.js'), web('report.js'), web('page.js'), web('live.html')
    static, static_policy = html_report.render(dict(kind='sample', title='x', settings=[], docs=[]))
    live, live_policy = html_report.render(html_report.live_page('tiny', {}, {}, {}), live=True)
    assert live_js not in static and form not in static and html_report._sha(live_js) not in static_policy
    assert '/api/' not in static and 'fetch(' not in static and 'id="t-live"' not in static
    assert f"<script>{live_js}</script>" in live and form in live and html_report._sha(live_js) in live_policy
    assert f"<script>{page_js}</script>" in live and report_js not in live
    assert "connect-src 'self'" in live_policy and 'innerHTML' not in live_js and 'eval(' not in live_js


def test_sample_report_holds_the_sample_numbers(tmp_path, gpt2_tok):
    m = tiny_model()
    prompt = gpt2_tok.encode("Once upon a time")
    samples = generate(m, torch.tensor([prompt, prompt]), 12, temperature=0.8, top_k=40, details=5,
                       generator=torch.Generator().manual_seed(3))
    path = html_report.sample_html(samples, gpt2_tok, tmp_path, dict(temperature=0.8, top_k=40, top_p=1.0, start='\n'))
    d = page_data(path)
    assert d['sampling'] == 'T=0.8, top-k 40' and ['start', "'\\n'"] in d['settings']
    with torch.no_grad():  # independent: one forward pass, float64 log-softmax
        x = torch.tensor([prompt + samples[0].tokens])
        ref = m(x, x)[0][0].double().log_softmax(-1)  # (T, V): with targets, every position
    for s, doc in zip(samples, d['docs']):
        assert doc['prompt'] == "Once upon a time" and doc['prompt_ids'] == prompt
        toks = doc['tokens']
        assert [e['id'] for e in toks] == s.tokens and [e['text'] for e in toks] == [gpt2_tok.token_text(i) for i in s.tokens]
        assert [e['logprob'] for e in toks] == s.logprobs.tolist()  # float64, exactly
        assert [e['sample_logprob'] for e in toks] == [x if math.isfinite(x) else None for x in s.sample_logprobs.tolist()]
        assert [e['prob'] for e in toks] == [format_prob(x) for x in s.logprobs.tolist()]
        assert [e['rank'] for e in toks] == s.ranks.tolist()
        for e, st in zip(toks, s.steps):
            alts = e['alternatives']
            assert [a['id'] for a in alts] == st.top_ids and [a['logprob'] for a in alts] == st.top_logprobs
            assert [a['prob'] for a in alts] == [format_prob(x) for x in st.top_logprobs]
            assert [a['sample_prob'] for a in alts] == [format_prob(x) for x in st.top_sample_logprobs]
            assert e['entropy'] == f"{st.entropy:.3f} nats"
        assert dict(doc['totals'])['probability under the model distribution'] == format_prob(s.logprob)
        assert dict(doc['totals'])['log-prob (sampling)'] == f"{s.sample_logprob:.4f}"
    P = len(prompt)
    want = [float(ref[P - 1 + i, t]) for i, t in enumerate(samples[0].tokens)]
    assert [e['logprob'] for e in d['docs'][0]['tokens']] == pytest.approx(want, abs=1e-4)


def test_injection_in_prompt_and_tokens_stays_data(tmp_path, gpt2_tok):
    m = tiny_model()
    s = generate(m, torch.tensor([gpt2_tok.encode(INJ)]), 3, temperature=0, details=3)[0]
    evil = types.SimpleNamespace(token_text=lambda i: INJ, decode=gpt2_tok.decode,
                                 pieces=lambda ids: [(i, i + 1, INJ) for i in range(len(ids))])
    text = open(html_report.sample_html([s], evil, tmp_path, {}), encoding='utf-8').read()
    assert text.count('</script>') == 5 and '<img' not in text  # the scale, the data, three scripts
    d = page_data(tmp_path / 'index.html')
    assert d['docs'][0]['prompt'] == INJ and d['docs'][0]['tokens'][0]['text'] == INJ


def test_beam_report_shows_the_steps_beam_search_recorded(gpt2_tok):
    """Each beam token's candidates are the ones beam search ranked it among (recorded inside beam_search,
    no second scoring pass): its log-prob is the beam's own, exactly; ranks and candidates equal a plain
    float64 forward pass; the settings show the beam settings that applied."""
    m = tiny_model().double()
    prompt = gpt2_tok.encode("Hello there")
    beams = beam_search(m, prompt, 4, num_beams=3, length_penalty=0.7, no_repeat_ngram_size=2, details=5)
    greedy = generate(m, torch.tensor([prompt]), 4, temperature=0, details=5)[0]
    L = types.SimpleNamespace(model=m, tok=gpt2_tok, ctx=contextlib.nullcontext())
    values = dict(num_beams=3, length_penalty=0.7, no_repeat_ngram_size=2, early_stopping=False, temperature=0.8,
                  num_samples=10, init_from='gpt2', out_dir='out', device='auto', max_new_tokens=4)
    settings = html_report.report_settings(values, 'cpu', 'float64', beams=True)
    d = html_report.beam_page(L, beams, greedy, settings)
    assert [doc['title'] for doc in d['docs']] == ['beam 1', 'beam 2', 'beam 3', 'greedy decoding (temperature 0)']
    shown = dict(d['settings'])
    assert shown['length_penalty'] == '0.7' and shown['no_repeat_ngram_size'] == '2' and shown['early_stopping'] == 'False'
    assert shown['device'] == "'cpu'" and 'temperature' not in shown and 'num_samples' not in shown
    assert 'out_dir' not in shown  # init_from='gpt2': out_dir did not apply
    assert all(doc['model_only'] for doc in d['docs'])
    for b, doc in zip(beams, d['docs']):
        assert [e['logprob'] for e in doc['tokens']] == b.logprobs.tolist()
        assert dict(doc['totals'])['beam score (log-prob / tokens^0.7)'] == f"{b.score:.4f}"
        with torch.no_grad():
            x = torch.tensor([b.prompt + b.tokens])
            ref = m(x, all_logits=True)[0][0].log_softmax(-1)[len(b.prompt) - 1:-1]  # (n, V) float64
        for e, r, t in zip(doc['tokens'], ref, b.tokens):
            assert e['rank'] == int((r > r[t]).sum()) + 1
            assert [a['id'] for a in e['alternatives']] == r.topk(5).indices.tolist()
            assert [a['logprob'] for a in e['alternatives']] == pytest.approx(r.topk(5).values.tolist(), abs=1e-9)
            assert e['logprob'] == pytest.approx(float(r[t]), abs=1e-9) and 'sample_prob' not in e


def run_inprocess(script, *args, monkeypatch, capsys):
    """Run a script as `python script args` would, in this process (no second torch import: faster)."""
    monkeypatch.setattr(sys, 'argv', [script, *args])
    capsys.readouterr()
    runpy.run_path(str(ROOT / script), run_name='__main__')
    return capsys.readouterr().out


def test_cli_reports(tmp_path, gpt2_tok, monkeypatch, capsys):
    """sample.py writes results/sample_<date-time>/index.html (not with --html=False); eval.py writes
    results/eval_<name>.html from its JSON, the comparison included."""
    monkeypatch.chdir(tmp_path)
    run_script = functools.partial(run_inprocess, monkeypatch=monkeypatch, capsys=capsys)
    write_ckpt(tmp_path / 'out')
    write_ckpt(tmp_path / 'out2', tiny_model(seed=1))
    out = run_script('sample.py', '--out_dir=out', '--start=Once upon a time', '--num_samples=2', '--max_new_tokens=5',
                     '--device=cpu', '--show=False')
    path, = (tmp_path / 'results').glob('sample_*/index.html')
    assert f"report (open it in a browser): {path.relative_to(tmp_path)}" in out
    d = page_data(path)
    printed = re.findall(r'model distribution.*?: (\S+) \(log-prob (-?[\d.]+)', out)
    assert [(dict(doc['totals'])['probability under the model distribution'],
             dict(doc['totals'])['log-prob (model)']) for doc in d['docs']] == printed
    out = run_script('sample.py', '--out_dir=out', '--start=Hi', '--num_beams=2', '--max_new_tokens=3', '--device=cpu',
                     '--results_dir=beams')
    path, = (tmp_path / 'beams').glob('sample_*/index.html')
    assert [doc['title'] for doc in page_data(path)['docs']] == ['beam 1', 'beam 2', 'greedy decoding (temperature 0)']
    assert f"report (open it in a browser): {path.relative_to(tmp_path)}" in out
    run_script('sample.py', '--out_dir=out', '--num_samples=1', '--max_new_tokens=2', '--html=False', '--device=cpu',
               '--results_dir=none')
    assert not (tmp_path / 'none').exists()

    (tmp_path / 'pairs.json').write_text(json.dumps([{"prompt": "Once upon a time", "response": " there was " + INJ},
                                                     {"prompt": "The end", "response": "."}]))
    run_script('eval.py', '--out_dir=out2', '--compare_init_from=out/ckpt.pt', '--eval_data=pairs.json', '--name=x',
               '--device=cpu')
    j = json.load(open(tmp_path / 'results' / 'eval_x.json'))
    d = page_data(tmp_path / 'results' / 'eval_x.html')
    assert d['kind'] == 'eval' and d['compare'] and len(d['docs']) == 2
    before = j['comparison']['before']['pairs']
    for p, b, doc in zip(j['pairs'], before, d['docs']):
        assert [e['logprob'] for e in doc['tokens']] == p['logprobs'] and [e['rank'] for e in doc['tokens']] == p['ranks']
        assert [e['text'] for e in doc['tokens']] == p['tokens'] and [e['expected'] for e in doc['tokens']] == p['expected']
        assert [e['before_logprob'] for e in doc['tokens']] == b['logprobs']
        assert [e['change'] for e in doc['tokens']] == [x - y for x, y in zip(p['logprobs'], b['logprobs'])]
        assert [e['change_ratio'] for e in doc['tokens']] == [format_ratio(x - y) for x, y in zip(p['logprobs'], b['logprobs'])]
        assert [e['change_nats'] for e in doc['tokens']] == [f"{x - y:+.3f} nats" for x, y in zip(p['logprobs'], b['logprobs'])]
        assert dict(doc['totals'])['probability of the response'] == p['probability']
    assert [r[3] for r in d['table']['rows']] == [p['probability'] for p in j['pairs']]
