"""Property-based fuzzing of serve.py's request bodies (hypothesis): every endpoint answers any JSON, plausible or
not, with a 2xx or a 4xx that says what is wrong, never a 500 and never a hang; a 200 stream ends properly."""
import contextlib
import json
import types

import pytest

import serve
from conftest import tiny_model
from nanoprobs.server import Engine, serve_in_thread

hypothesis = pytest.importorskip('hypothesis', reason="the fuzz tests need hypothesis: pip install hypothesis")
httpx = pytest.importorskip('httpx', reason="the fuzz tests need httpx: pip install httpx")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.one_thread
RUNS = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

chars = st.characters(min_codepoint=0, max_codepoint=0x10FFFF)
floats = st.floats(allow_nan=False, allow_infinity=False)  # subnormals too: 5e-324 is a temperature like any
TINY = (5e-324, 1e-310, 2e-308, 1e-300)  # logits / T overflows here: sampling works in log space, shifted
scalars = st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | floats | st.text(chars, max_size=12)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(chars, max_size=6), c,
                                                                                     max_size=3), max_leaves=8)


def near(*edges, lo=None, hi=None):
    """A number at or next to one of the edges of its range (where bugs live), or anywhere in [lo, hi]."""
    edge = st.sampled_from(edges)
    if lo is None:
        return edge
    return edge | (st.integers(lo, hi) if isinstance(lo, int) else st.floats(lo, hi))


ids = st.lists(near(-1, 0, 50256, 50257, 50303, 2 ** 63, lo=0, hi=50256), max_size=6)
texts = st.text(chars, max_size=30) | st.sampled_from(['', '\ud800', 'a\udfffb', '\x00', '<|endoftext|>', '\u2028',
                                                      '\ufffd', ' ' * 40])
counts = near(-1, 0, 1, 2, 4, 5, 50, 51, 2 ** 63)  # max_new_tokens / max_tokens (limit 4), top / logprobs (50)
plausible = {  # a value of about the right kind, at the edges of its range, mixed with arbitrary JSON
    'prompt': texts | ids | st.lists(texts | ids, max_size=3), 'prompt_ids': ids, 'prefix': texts, 'prefix_ids': ids,
    'response': texts, 'response_ids': ids, 'ids': ids, 'max_new_tokens': counts, 'max_tokens': counts,
    'temperature': near(0, -0.0, *TINY, 1, 1e6, 1e6 + 1, -1, lo=0.0, hi=3.0),
    'top_k': near(-1, 0, 1, 50257, 50258, 2 ** 63, lo=0, hi=60), 'top_p': near(0, 1e-300, 0.5, 1, 1.0000001, -1),
    'top': counts, 'seed': near(-1, 0, 2 ** 63 - 1, 2 ** 63, 2 ** 64, lo=0, hi=2 ** 63 - 1),
    'stop_at_eot': st.booleans(), 'stream': st.booleans(), 'n': near(0, 1, 2, 16, 17), 'logprobs': counts,
    'echo': st.booleans(), 'stop': texts | st.lists(texts, max_size=5),
    'temperatures': st.lists(near(0, *TINY, 1, 1e6, 1e6 + 1, -1), max_size=14),
    'stream_options': st.fixed_dictionaries({}, optional={'include_usage': st.booleans()}), 'model': texts,
    'presence_penalty': floats, 'best_of': near(-1, 0, 1, 2, 3), 'logit_bias': values, 'suffix': texts, 'user': texts,
    'position': near(-1, 0, 1, 2, 5, 6, 32, 33, 2 ** 63), 'method': st.sampled_from(['ig', 'gxi', 'IG', '', 'lime']),
    'steps': near(-1, 0, 1, 2, 256, 257, 2 ** 63, lo=1, hi=8)}
FIELDS = {'/api/generate': ['prompt', 'prompt_ids', 'prefix', 'prefix_ids', 'max_new_tokens', 'temperature', 'top_k',
                            'top_p', 'top', 'seed', 'stop_at_eot', 'stream'],
          '/api/score': ['prompt', 'prompt_ids', 'response', 'response_ids', 'temperature', 'top_k', 'top_p', 'top'],
          '/api/temperatures': ['ids', 'prompt', 'temperatures', 'top_k', 'top_p', 'top'],
          '/v1/completions': ['model', 'prompt', 'max_tokens', 'temperature', 'top_p', 'top_k', 'n', 'stream',
                              'stream_options', 'logprobs', 'echo', 'stop', 'seed', 'presence_penalty', 'best_of',
                              'logit_bias', 'suffix', 'user'],
          '/api/inspect': ['ids', 'position']}
try:
    import captum  # noqa: F401
    FIELDS['/api/attribute'] = ['ids', 'position', 'method', 'steps']
except ImportError:  # the server answers 501 without it (tests/test_serve.py checks that)
    pass


def bodies(path):
    fields = {f: plausible[f] | values for f in FIELDS[path]}
    return st.fixed_dictionaries({}, optional={**fields, 'unknown': values}) | values


@pytest.fixture(scope='module')
def client(tmp_path_factory):
    from hypothesis.configuration import set_hypothesis_home_dir
    from nanoprobs import tokenizer
    set_hypothesis_home_dir(tmp_path_factory.mktemp('hypothesis'))  # its caches, not a .hypothesis/ in the repo
    try:
        tok = tokenizer.gpt2_tokenizer()
    except tokenizer.LoadError:
        pytest.skip('needs the GPT-2 BPE files')
    L = types.SimpleNamespace(model=tiny_model(), tok=tok, ctx=contextlib.nullcontext(), device='cpu',
                              dtype='float32', source='tiny')
    srv = serve_in_thread(Engine(L, serve.settings(max_tokens_limit=4, max_new_tokens=2, max_prompt_chars=40)))
    with httpx.Client(base_url=srv.url, timeout=20) as c:  # a hang fails as a timeout
        yield c
    srv.stop()


def check(c, path, body):
    r = c.post(path, content=json.dumps(body, allow_nan=False), headers={'Content-Type': 'application/json'})
    assert r.status_code in (200, 400), (r.status_code, body, r.text[:300])
    if r.status_code == 400:
        err = r.json()['error']
        assert (err['message'] if path.startswith('/v1') else err).strip()
        return
    kind = r.headers['content-type']
    if kind.startswith(('text/event-stream', 'application/x-ndjson')):  # a stream: each event whole, no error
        lines = [x.removeprefix('data: ') for x in r.text.splitlines() if x.strip()]
        last = '[DONE]' if kind.startswith('text/event-stream') else None
        events = [json.loads(x) for x in (lines[:-1] if last else lines)]
        assert not any('error' in e for e in events), r.text[-300:]
        assert lines[-1] == last if last else 'done' in events[-1]
    else:
        assert kind == 'application/json'
        r.json()


@pytest.mark.parametrize('path', list(FIELDS))
def test_any_body_gets_an_answer_not_a_500(client, path):
    @RUNS
    @given(body=bodies(path))
    def run(body):
        check(client, path, body)
    run()


def test_raw_bytes_and_deep_nesting_get_a_400(client):
    @RUNS
    @given(raw=st.binary(max_size=40) | st.text(chars, max_size=40).map(str.encode))
    def run(raw):
        r = client.post('/api/generate', content=raw, headers={'Content-Type': 'application/json'})
        assert r.status_code in (200, 400), (raw, r.text)
    run()
    for raw in (b'[' * 100000 + b']' * 100000, b'{"prompt": ' * 5000 + b'1' + b'}' * 5000, b'{"prompt": NaN}'):
        for path in FIELDS:
            assert client.post(path, content=raw, headers={'Content-Type': 'application/json'}).status_code == 400
