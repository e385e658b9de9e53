"""serve.py's OpenAI-compatible API with real clients: the official openai package and lm-evaluation-harness
get the numbers of transformers' GPT2LMHeadModel on the same weights (random, tiny, in tmp_path)."""
import contextlib
import json

import pytest
import torch

import serve
from conftest import SHARED, make_hf_dir
from nanoprobs import load
from nanoprobs.decoding import generate
from nanoprobs.sampling import make_generator
from nanoprobs.server import Engine, serve_in_thread
from nanoprobs.server.openai_api import token_string

openai = pytest.importorskip('openai', reason="the OpenAI API tests need the openai client: pip install openai")
pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.one_thread
TOKDIR = SHARED / 'gpt2_tokenizer'


@pytest.fixture(scope='module')
def hf_model(tmp_path_factory):
    """A local Hugging Face GPT-2 folder with random weights, scaled up so that, like a trained model's,
    its next-token distributions are peaked (their top tokens are far apart)."""
    if not TOKDIR.is_dir():
        pytest.skip("needs a Hugging Face GPT-2 tokenizer folder at ../shared/gpt2_tokenizer")
    path = tmp_path_factory.mktemp('hf')
    hf = make_hf_dir(path)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if p.dim() == 2:
                p.mul_(8 if 'wte' in name or 'wpe' in name else 3)
    hf.save_pretrained(path)
    return path, hf.eval()


@pytest.fixture(scope='module')
def served(hf_model):
    """serve.py's server over the same folder, loaded by load.load_model as serve.py loads it."""
    path, hf = hf_model
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    L = load.load_model(str(path), device='cpu', dtype='float32')
    engine = Engine(L, serve.settings(max_tokens_limit=200))
    srv = serve_in_thread(engine)
    client = openai.OpenAI(base_url=srv.url + '/v1', api_key='none', max_retries=0, timeout=60)
    yield srv, client, L, hf
    srv.stop()
    torch.set_num_threads(n)


def hf_logprobs(hf, ids, start, block):
    """log p(ids[i] | ids[:i]) for i >= start under transformers' model in float64, each token seeing at most
    the block tokens before it (score()'s sliding window; within one block, one forward pass)."""
    out = []
    with torch.no_grad():
        full = hf(torch.tensor([ids[:block]])).logits[0].double().log_softmax(-1)  # (T, V)
        for i in range(start, len(ids)):
            lp = full[i - 1] if i <= block else \
                hf(torch.tensor([ids[i - block:i]])).logits[0, -1].double().log_softmax(-1)
            out.append(lp)
    return out  # one (V,) log-prob vector per predicted token


def test_echo_scores_equal_transformers_past_the_block_size(served):
    """What lm-eval's loglikelihood asks: echo=True, max_tokens=0, logprobs=N. A 40-token prompt > block 32."""
    srv, client, L, hf = served
    tok = L.tok
    text = "Once upon a time there was a little fox who lived in the woods near a river, and every morning " \
           "she walked to the water to drink and to look at the"
    ids = tok.encode(text)
    assert len(ids) > 32
    r = client.completions.create(model='tiny', prompt=text, max_tokens=0, echo=True, logprobs=3)
    c = r.choices[0]
    assert c.text == text and c.finish_reason == 'length' and r.usage.prompt_tokens == len(ids)
    lp = c.logprobs
    assert lp.tokens == [token_string(tok, i) for i in ids]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # the first token has no context
    want = hf_logprobs(hf, ids, 1, 32)
    assert lp.token_logprobs[1:] == pytest.approx([float(w[t]) for w, t in zip(want, ids[1:])], abs=2e-4)
    for top, w, t in zip(lp.top_logprobs[1:], want, ids[1:]):
        v, i = w.topk(3)
        expected = {token_string(tok, j): x for j, x in zip(i.tolist(), v.tolist())}
        expected.setdefault(token_string(tok, t), float(w[t]))  # the chosen token is always there
        assert top.keys() == expected.keys() and list(top.values()) == pytest.approx(list(expected.values()), abs=2e-4)
    assert lp.text_offset == [len(tok.decode(ids[:i])) for i in range(len(ids))]
    # the other prompt forms: token ids, and a batch of prompts
    r2 = client.completions.create(model='tiny', prompt=[ids[:10], ids], max_tokens=0, echo=True, logprobs=0)
    assert [ch.index for ch in r2.choices] == [0, 1]
    assert r2.choices[1].logprobs.token_logprobs == lp.token_logprobs
    first = r2.choices[0].logprobs.token_logprobs
    assert first[0] is None and first[1:] == pytest.approx(lp.token_logprobs[1:10], abs=1e-5)
    assert r2.choices[1].logprobs.top_logprobs[5] == {lp.tokens[5]: lp.token_logprobs[5]}  # logprobs=0: the chosen


def test_seeded_sampling_equals_generate_and_transformers(served):
    """n=2 completions with a seed: each is generate()'s draw from make_generator(seed + j), its log-probs
    are transformers' model distribution (not the sampling one), and streaming gives the same."""
    srv, client, L, hf = served
    tok = L.tok
    prompt = "Once upon a time"
    p = tok.encode(prompt)
    args = dict(model='tiny', prompt=prompt, max_tokens=12, temperature=0.9, top_p=0.95, seed=5, logprobs=2, n=2)
    r = client.completions.create(**args)
    assert len(r.choices) == 2 and r.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in r.choices)
    for j, c in enumerate(r.choices):
        ref = generate(L.model, torch.tensor([p]), 12, temperature=0.9, top_p=0.95, stop_token=tok.eot,
                       generator=make_generator('cpu', 5 + j))[0]
        new = [t for t in ref.tokens if t != tok.eot]
        assert c.text == tok.decode(new) and c.logprobs.tokens == [token_string(tok, t) for t in ref.tokens]
        assert c.finish_reason == ('stop' if ref.stopped else 'length')
        want = hf_logprobs(hf, p + ref.tokens, len(p), 32)
        assert c.logprobs.token_logprobs == pytest.approx([float(w[t]) for w, t in zip(want, ref.tokens)], abs=2e-4)
        assert c.logprobs.token_logprobs == pytest.approx(ref.logprobs.tolist(), abs=1e-9)
        assert c.logprobs.text_offset[0] == len(prompt)  # offsets count from the prompt's start
    assert r.choices[0].text != r.choices[1].text  # two random streams
    chunks = list(client.completions.create(**args, stream=True, stream_options={'include_usage': True}))
    for j, c in enumerate(r.choices):
        mine = [ch.choices[0] for ch in chunks if ch.choices and ch.choices[0].index == j]
        assert ''.join(x.text for x in mine) == c.text and mine[-1].finish_reason == c.finish_reason
        assert sum((x.logprobs.token_logprobs for x in mine), []) == c.logprobs.token_logprobs
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_stop_sequences_echo_and_errors(served):
    srv, client, L, hf = served
    greedy = client.completions.create(model='tiny', prompt="The king said", max_tokens=20, temperature=0,
                                       logprobs=1)
    text = greedy.choices[0].text
    stop = text[len(text) // 2:len(text) // 2 + 2]
    cut = text.index(stop)
    for stream in (False, True):
        args = dict(model='tiny', prompt="The king said", max_tokens=20, temperature=0, stop=[stop, 'zzzz'],
                    logprobs=1, stream=stream)
        r = client.completions.create(**args)
        choices = [ch.choices[0] for ch in r] if stream else r.choices
        assert ''.join(c.text for c in choices) == text[:cut] and choices[-1].finish_reason == 'stop'
        toks = sum((c.logprobs.tokens for c in choices), [])
        offsets = sum((c.logprobs.text_offset for c in choices), [])
        assert toks == greedy.choices[0].logprobs.tokens[:len(toks)]
        assert all(o - len("The king said") < cut for o in offsets)  # no token that begins in the stop
    r = client.completions.create(model='tiny', prompt="Hi", max_tokens=2, temperature=0, echo=True)
    assert r.choices[0].text.startswith("Hi") and r.choices[0].logprobs is None
    models = client.models.list()
    assert [m.id for m in models.data] == [L.source]
    for bad, words in ((dict(max_tokens=201), 'max_tokens'), (dict(logprobs=51), 'logprobs'),
                       (dict(prompt=[]), 'empty list'), (dict(prompt=''), 'empty'),
                       (dict(prompt=[[1, 10 ** 9]]), 'outside the vocabulary'),
                       (dict(presence_penalty=1), 'not supported'), (dict(n=17), 'n: input'),
                       (dict(stop=['a'] * 5), 'stop')):
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(**{'model': 'tiny', 'prompt': 'x', **bad})
        assert words in e.value.body['message'], (bad, e.value.body)


def test_lm_eval_local_completions_equals_lm_eval_hf(served, hf_model, tmp_path):
    """lm-evaluation-harness' local-completions model against the server runs a small local multiple-choice
    task and gets the same log-likelihoods as lm-eval's own hf model on the same weights."""
    for name in ('lm_eval', 'tenacity'):  # tenacity: lm-eval's API models need it
        pytest.importorskip(name, reason="the lm-eval test needs lm-evaluation-harness: pip install 'lm-eval[api]'")
    from lm_eval.api.registry import get_model
    from lm_eval.evaluator import evaluate
    from lm_eval.tasks import TaskManager, get_task_dict
    srv, client, L, hf = served
    path, _ = hf_model
    docs = [dict(question="The cat sat on the", choices=[" mat", " moon", " sea"], answer=0),
            dict(question="Once upon a", choices=[" time", " dog"], answer=0),
            dict(question="Two plus two is", choices=[" four", " five", " blue"], answer=0)]
    data = tmp_path / 'tiny_mc.jsonl'
    data.write_text(''.join(json.dumps(d) + '\n' for d in docs))
    (tmp_path / 'tiny_mc.yaml').write_text(
        "task: tiny_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{{{question}}}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\nmetric_list:\n  - metric: acc\n")
    tm = TaskManager(include_path=str(tmp_path), include_defaults=False)  # not lm-eval's thousands of tasks
    runs = {}
    for name, args in (('local-completions', f"model=tiny,base_url={srv.url}/v1/completions,tokenizer={TOKDIR},"
                                             "tokenizer_backend=huggingface,max_retries=1"),
                       ('hf', f"pretrained={path},device=cpu,dtype=float32")):
        lm = get_model(name).create_from_arg_string(args, dict(batch_size=1))
        with contextlib.redirect_stdout(None):  # (simple_evaluate would also collect pip's environment: seconds)
            res = evaluate(lm, get_task_dict(['tiny_mc'], tm), log_samples=True, bootstrap_iters=0)
        runs[name] = [[r[0][0] for r in s['resps']] for s in res['samples']['tiny_mc']]
    assert len(runs['hf']) == 3 and [len(x) for x in runs['hf']] == [3, 2, 3]
    for api, ref in zip(runs['local-completions'], runs['hf']):
        assert api == pytest.approx(ref, abs=2e-4)
