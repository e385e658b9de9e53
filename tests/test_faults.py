"""The fault sweep's cases (issue 18): extreme values, damaged files, full disks, memory limits and interrupted
runs each end in a true result or one line naming the file, key or value and the fix; nothing is lost."""
import errno
import json
import math
import os
import pickle
import signal
import sys

import numpy as np
import pytest
import torch

from configurator import UserError
from conftest import ROOT, run_script, tiny_model, write_ckpt
from nanoprobs import checks, load, sampling, tokenizer
from nanoprobs.decoding import generate, under_temperatures


def one_line(e):
    msg = str(e.value if hasattr(e, 'value') else e)
    assert '\n' not in msg and 'Traceback' not in msg, msg
    return msg


# -----------------------------------------------------------------------------
# sampling: any positive temperature, however small

TINY_TEMPERATURES = [1e-310, 5e-324, 2e-308]


@pytest.mark.parametrize('t', TINY_TEMPERATURES)
def test_a_tiny_temperature_is_greedy_and_never_nan(t):
    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 5  # (B, V)
    lp = sampling.sampling_logprobs(logits, t)
    greedy = sampling.sampling_logprobs(logits, 0)
    # exactly greedy's distribution; a log-prob may be a huge finite negative (-5e306) rather than -inf
    assert not lp.isnan().any() and torch.equal(lp.exp(), greedy.exp()) and (lp <= 0).all()
    ids, _ = sampling.sample(logits, t, generator=torch.Generator().manual_seed(0))
    assert ids.tolist() == logits.argmax(-1).tolist()
    tie = torch.tensor([[1.0, 3.0, 3.0, -2.0]])  # the limit T -> 0 splits the mass between exact ties
    assert sampling.sampling_logprobs(tie, t).exp().tolist() == [[0.0, 0.5, 0.5, 0.0]]


@pytest.mark.parametrize('t', [1e-3, 0.7, 1.0, 3.0])
def test_the_shifted_computation_equals_the_plain_one(t):
    """Where logits / T does not overflow, the result is the textbook log_softmax(logits / T) in float64."""
    torch.manual_seed(1)
    logits = torch.randn(4, 64) * 3
    want = (logits.double() / t).log_softmax(-1)
    assert torch.allclose(sampling.sampling_logprobs(logits, t), want, rtol=0, atol=1e-12)
    k = sampling.sampling_logprobs(logits, t, top_k=5)
    top = logits.double().topk(5).indices
    ref = torch.full_like(want, -math.inf).scatter(-1, top, (logits.double() / t).gather(-1, top).log_softmax(-1))
    assert torch.allclose(k, ref, rtol=0, atol=1e-12)


def test_generate_and_the_temperature_comparison_at_a_tiny_temperature():
    model = tiny_model(vocab_size=300)
    x = torch.tensor([[5, 17, 42]])
    greedy = generate(model, x, 6, temperature=0)[0]
    for t in TINY_TEMPERATURES:
        s = generate(model, x, 6, temperature=t, top_k=200, generator=sampling.make_generator('cpu', 0))[0]
        assert s.tokens == greedy.tokens and s.sample_logprobs.tolist() == [0.0] * 6
        assert torch.allclose(s.logprobs, greedy.logprobs, rtol=0, atol=1e-12)
    top, lps, ents = under_temperatures(model, [5, 17, 42], [1e-310, 5e-324, 1.0], k=5)
    for lp in lps[:2]:
        assert lp.exp().tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert not any(map(math.isnan, ents)) and ents[0] == ents[1] == 0.0


def test_a_checkpoint_with_nan_weights_is_one_line(tmp_path):
    m = tiny_model()
    with torch.no_grad():
        m.transformer.h[1].mlp.c_fc.weight[3, 4] = float('nan')
    path = write_ckpt(tmp_path / 'out', m)
    with pytest.raises(ValueError) as e:
        load.load_model('resume', out_dir=str(tmp_path / 'out'), device='cpu')
    msg = one_line(e)
    assert msg.startswith(f"{path}: the weights hold NaN or infinite values (transformer.h.1.mlp.c_fc.weight")
    assert 'use an earlier checkpoint' in msg


# -----------------------------------------------------------------------------
# train.py: settings that make no model, data it cannot use, wandb, full disks (run in this process)

@pytest.fixture(scope='module')
def char_data(tmp_path_factory):
    """A character-level dataset: 150 symbols (meta.pkl), train.bin and val.bin of cycling ids."""
    d = tmp_path_factory.mktemp('char')
    ids = (np.arange(6000) % 150).astype(np.uint16)
    ids[:5000].tofile(d / 'train.bin')
    ids[5000:].tofile(d / 'val.bin')
    chars = [chr(0x100 + i) for i in range(150)]
    with open(d / 'meta.pkl', 'wb') as f:
        pickle.dump({'vocab_size': 150, 'itos': dict(enumerate(chars)), 'stoi': {c: i for i, c in enumerate(chars)}}, f)
    return d


def train_here(monkeypatch, out_dir, data_dir, **kw):
    from test_train import train_here as run
    return run(monkeypatch, out_dir, data_dir, **kw)


@pytest.mark.parametrize('kw,start', [
    (dict(n_head=3), "--n_head=3 does not divide n_embd=32 (each head gets n_embd / n_head channels); use a "
                     "divisor of 32, e.g. --n_head=2 (1, 2, 4, 8, 16, 32)"),
    (dict(n_embd=0), "--n_embd=0 must be a whole number of at least 1"),
    (dict(n_head=0), "--n_head=0 must be a whole number of at least 1"),
    (dict(seed=99999999999999999999), "--seed=99999999999999999999 must be a whole number from 0 to 4294967295"),
    (dict(wandb_log=True), "wandb_log=True needs the wandb package: pip install wandb (or --wandb_log=False)"),
])
def test_train_settings_that_make_no_run_fail_before_any_work(tmp_path, monkeypatch, kw, start):
    monkeypatch.setitem(sys.modules, 'wandb', None)  # not installed: `import wandb` raises ImportError
    with pytest.raises(UserError) as e:
        train_here(monkeypatch, tmp_path / 'out', tmp_path / 'nodata', **kw)
    assert one_line(e).startswith(start), str(e.value)
    assert not (tmp_path / 'out').exists()


def test_train_a_model_too_big_for_memory_is_one_line(tmp_path, monkeypatch, char_data):
    with pytest.raises(UserError) as e:
        train_here(monkeypatch, tmp_path / 'out', char_data, n_layer=10 ** 9)
    msg = one_line(e)
    assert msg.startswith("a model of 12,") and 'cannot fit' in msg and '--n_layer' in msg, msg


def test_train_token_ids_beyond_the_vocabulary_name_the_file(tmp_path, monkeypatch, char_data):
    bad = tmp_path / 'bad'
    bad.mkdir()
    for f in ('meta.pkl', 'val.bin'):
        (bad / f).write_bytes((char_data / f).read_bytes())
    (np.arange(3000) % 200).astype(np.uint16).tofile(bad / 'train.bin')  # ids up to 199, vocabulary of 150
    with pytest.raises(UserError) as e:
        train_here(monkeypatch, tmp_path / 'out', bad, max_iters=2)
    msg = one_line(e)
    assert msg.startswith(f"{bad / 'train.bin'} holds token id 1") and "vocabulary of 150 tokens" in msg
    assert 'prepare_bin.py' in msg


def test_train_odd_sized_bin_names_the_file(tmp_path, monkeypatch, char_data):
    bad = tmp_path / 'odd'
    bad.mkdir()
    (bad / 'train.bin').write_bytes((char_data / 'train.bin').read_bytes() + b'\x07')
    (bad / 'val.bin').write_bytes((char_data / 'val.bin').read_bytes())
    with pytest.raises(UserError) as e:
        train_here(monkeypatch, tmp_path / 'out', bad)
    assert one_line(e).startswith(f"{bad / 'train.bin'} is 10,001 bytes, an odd number: a .bin holds 2-byte")


def torch_full_disk(real_save, fail_on):
    """torch.save as it fails on a full disk: torch's own RuntimeError, not an OSError (written half)."""
    calls = []

    def save(obj, f):
        calls.append(f)
        if len(calls) == fail_on:
            with open(f, 'wb') as half:
                half.write(b'PK half a checkpoint')
            raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598')
        real_save(obj, f)
    return save, calls


def test_train_full_disk_in_torch_save_is_one_line_and_keeps_the_checkpoint(tmp_path, monkeypatch, char_data):
    out = tmp_path / 'out'
    save, calls = torch_full_disk(torch.save, 2)
    monkeypatch.setattr(torch, 'save', save)
    with pytest.raises(UserError) as e:
        train_here(monkeypatch, out, char_data, max_iters=4, eval_interval=2)
    msg = one_line(e)
    assert len(calls) == 2 and msg.startswith(f"could not save {out / 'ckpt.pt'}: torch could not write the file")
    assert f"{out / 'ckpt.pt'} is as before" in msg and 'free' in msg
    assert load.load_checkpoint(out)['iter_num'] == 2  # the earlier checkpoint, whole
    assert sorted(os.listdir(out)) == ['ckpt.pt', 'log.csv']  # no temporary file left


def test_train_disk_full_at_start_is_one_line(tmp_path, monkeypatch, char_data):
    """The first file train.py writes is the loss log (through the atomic writer): a full disk there is one
    line too, and a resumed run's log.csv stays as it was."""
    from nanoprobs import atomic
    monkeypatch.setattr(atomic, 'write_all', full_disk_writes(atomic.write_all))
    with pytest.raises(UserError) as e:
        train_here(monkeypatch, tmp_path / 'out', char_data, max_iters=2)
    msg = one_line(e)
    assert msg.startswith(f"could not write {tmp_path / 'out' / 'log.csv'}: No space left on device"), msg
    assert os.listdir(tmp_path / 'out') == []  # the temporary file is gone


def full_disk_writes(real_write_all):
    """atomic.write_all on a full disk: each file's writer starts, then fails with ENOSPC."""
    def write_all(writers, *a, **k):
        def fail(tmp):
            with open(tmp, 'w') as f:
                f.write('half')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_all({p: fail for p in writers}, *a, **k)
    return write_all


# -----------------------------------------------------------------------------
# damaged or edited files: checkpoints, vocabularies, Hugging Face folders

def test_n_params_counts_what_the_model_has():
    from model import GPT, GPTConfig
    for bias in (True, False):
        args = dict(n_layer=3, n_head=2, n_embd=16, block_size=8, vocab_size=70, bias=bias)
        assert checks.n_params(args) == GPT(GPTConfig(**args)).get_num_params(non_embedding=False)


@pytest.mark.parametrize('edit,part', [
    (lambda a: a.update(n_layer='2'), "model_args n_layer='2' must be a whole number of at least 1"),
    (lambda a: a.update(n_embd=0), "model_args n_embd=0 must be a whole number of at least 1"),
    (lambda a: a.update(n_layer=10 ** 9), "model_args n_layer=1000000000 but its weights hold 2"),
    (lambda a: a.update(n_head=5), "model_args n_head=5 does not divide n_embd=32"),
    (lambda a: a.update(vocab_size=100), "model_args vocab_size=100 but its weights hold 50257"),
])
def test_edited_model_args_are_one_line(tmp_path, monkeypatch, edit, part):
    ckpt = load.checkpoint_dict(tiny_model())
    edit(ckpt['model_args'])
    os.makedirs(tmp_path / 'out')
    torch.save(ckpt, tmp_path / 'out' / 'ckpt.pt')
    with pytest.raises(ValueError) as e:
        load.load_model('resume', out_dir=str(tmp_path / 'out'), device='cpu')
    msg = one_line(e)
    assert msg.startswith(f"{tmp_path / 'out' / 'ckpt.pt'}: {part}") and 'use another checkpoint' in msg, msg


def test_model_args_that_are_not_a_dict(tmp_path):
    ckpt = load.checkpoint_dict(tiny_model())
    ckpt['model_args'] = 'n_layer=2'
    torch.save(ckpt, tmp_path / 'ckpt.pt')
    with pytest.raises(ValueError) as e:
        load.load_checkpoint(str(tmp_path / 'ckpt.pt'))
    assert one_line(e) == (f"{tmp_path / 'ckpt.pt'}: model_args is a str, not a dict of the model's sizes; the "
                           "checkpoint is damaged or was edited: use another checkpoint")


@pytest.mark.parametrize('itos,part', [
    ({0: 'a', 2: 'b'}, "'itos' must map every id 0..1 to its text; id 1 is missing"),
    ({0: 'a', 1: 7}, "'itos' id 1 is 7, not a string"),
    ('ab', "'itos' is a str, not a dict {id: text} or a list"),
    (['a', 'a'], "'itos' holds 'a' twice"),
])
def test_malformed_meta_pkl_is_one_line(tmp_path, itos, part):
    path = tmp_path / 'meta.pkl'
    with open(path, 'wb') as f:
        pickle.dump({'vocab_size': 2, 'itos': itos, 'stoi': {}}, f)
    with pytest.raises(tokenizer.LoadError) as e:
        tokenizer.char_tokenizer(str(path))
    msg = one_line(e)
    assert msg.startswith(f"{path}: {part}") and 'prepare_bin.py --tokenizer=char' in msg, msg


@pytest.mark.parametrize('rec,part', [
    ({'kind': 'char', 'itos': ['a', 3]}, "'itos' id 1 is 3, not a string"),
    ({'kind': 'char', 'itos': ['a', 'b'], 'unk': 5}, "'unk' is 5, not one character"),
    ({'kind': 'char', 'itos': 'ab'}, "'itos' is a str, not a dict {id: text} or a list"),
])
def test_character_tokenizer_record_of_the_wrong_type_is_one_line(rec, part):
    with pytest.raises(tokenizer.LoadError) as e:
        tokenizer.tokenizer_from_record(rec, 'out/ckpt.pt')
    msg = one_line(e)
    assert msg.startswith(f"out/ckpt.pt: {part}"), msg


def test_meta_pkl_vocab_size_must_match(tmp_path):
    path = tmp_path / 'meta.pkl'
    with open(path, 'wb') as f:
        pickle.dump({'vocab_size': 9, 'itos': {0: 'a', 1: 'b'}, 'stoi': {}}, f)
    with pytest.raises(tokenizer.LoadError, match=r"'vocab_size' is 9 but 'itos' holds 2 tokens"):
        tokenizer.char_tokenizer(str(path))


class Runs:
    def __reduce__(self):
        return (print, ('this ran',))


@pytest.fixture(scope='module')
def hf_folder(tmp_path_factory):
    """A tiny Hugging Face GPT-2 folder (made once; each test edits its own copy) and its model."""
    from conftest import make_hf_dir
    path = tmp_path_factory.mktemp('hf') / 'hf'
    return path, make_hf_dir(path)


def copy_of(hf_folder, tmp_path):
    import shutil
    return shutil.copytree(hf_folder[0], tmp_path / 'hf'), hf_folder[1]


def test_hugging_face_folder_with_a_code_pickle_never_suggests_weights_only_false(tmp_path, capsys, hf_folder):
    _, hf = copy_of(hf_folder, tmp_path)
    os.remove(tmp_path / 'hf' / 'model.safetensors')
    sd = hf.state_dict()
    sd['x'] = Runs()
    torch.save(sd, tmp_path / 'hf' / 'pytorch_model.bin')
    with pytest.raises(ValueError) as e:
        load.load_model(str(tmp_path / 'hf'), device='cpu')
    msg = one_line(e)
    assert msg.startswith(f"{tmp_path / 'hf' / 'pytorch_model.bin'} holds Python objects beyond tensors"), msg
    assert 'it names print' in msg and 'weights_only' not in msg and 'trust' not in msg
    assert 'this ran' not in capsys.readouterr().out


def test_truncated_safetensors_is_one_line(tmp_path, hf_folder):
    copy_of(hf_folder, tmp_path)
    st = tmp_path / 'hf' / 'model.safetensors'
    st.write_bytes(st.read_bytes()[:st.stat().st_size // 2])
    with pytest.raises(ValueError) as e:
        load.load_model(str(tmp_path / 'hf'), device='cpu')
    msg = one_line(e)
    assert msg.startswith(f"{st} is not a readable safetensors file (truncated or corrupt?)"), msg


# -----------------------------------------------------------------------------
# eval.py: files too deep to read, text that is no text, results past float range, comparisons

def eval_run(lps, name, prompts=None):
    from nanoprobs.scores import EvalRun, PairResult
    prompts = prompts or [f"p{i}" for i in range(len(lps))]
    pairs = [PairResult(index=i + 1, prompt=prompts[i], response=f" r{i}", prompt_ids=[1],
                        response_ids=[2 + j for j in range(len(x))], tokens=[f"t{j}" for j in range(len(x))],
                        logprobs=x, ranks=[1] * len(x), expected=['x'] * len(x)) for i, x in enumerate(lps)]
    return EvalRun(name, {'eval_data': 'x.json'}, pairs, source=f"{name}.json")


@pytest.mark.parametrize('reader', ['read_pairs', 'read_results'])
def test_deeply_nested_json_is_one_line(tmp_path, reader):
    from nanoprobs import pairs
    path = tmp_path / 'deep.json'
    path.write_text('[' * 100000 + ']' * 100000)
    with pytest.raises(UserError) as e:
        getattr(pairs, reader)(str(path))
    assert one_line(e).startswith(f"{path} nests lists or objects deeper than can be read"), str(e.value)


@pytest.mark.parametrize('body,part', [
    ('[{"prompt": "Once", "response": " a\\ud800b"}]', 'pair 1 (entry 1 of the list): "response" holds a lone '
                                                       'surrogate \\ud800 at character 2'),
    ('[["a", "b"], {"prompt": "\\udfff", "response": "b"}]', 'pair 2 (entry 2 of the list): "prompt" holds a lone '
                                                             'surrogate \\udfff at character 0'),
    ('[{"prompt": "a", "response": "b", "kind": "\\ud83d"}]', 'pair 1 (entry 1 of the list): the rest of the pair holds a lone surrogate'),
])
def test_a_lone_surrogate_names_the_pair_and_the_fix(tmp_path, body, part):
    from nanoprobs import pairs
    path = tmp_path / 'pairs.json'
    path.write_text(body)
    with pytest.raises(UserError) as e:
        pairs.read_pairs(str(path))
    msg = one_line(e)
    assert msg.startswith(f"{path}: {part}") and 'both halves of its escape' in msg, msg
    path.write_text('[{"prompt": "a", "response": " \\ud83d\\ude00"}]')  # a whole pair is an emoji
    assert pairs.read_pairs(str(path))[0]['response'] == ' \U0001F600'


def test_pair_differs_shows_where(tmp_path):
    from nanoprobs.scores import compare
    same = "Once upon a time, in a land far away, there lived a "
    before = eval_run([[-1.0]], 'before', [same + "king"])
    after = eval_run([[-1.0]], 'after', [same + "queen"])
    with pytest.raises(UserError) as e:
        compare(before, after)
    assert one_line(e) == (f"pair 1's prompt differs between before.json and this run from character {len(same)} "
                           "on: '…lived a king' there, '…lived a queen' here; compare runs over the same eval_data")


def test_results_past_float_range_are_written(tmp_path):
    """A pair's mean log-prob of -800 makes a perplexity of exp(800), past float range: the console says inf, the
    results file (strict JSON) holds null beside the mean log-prob, the HTML report shows inf; all are written."""
    from nanoprobs.report import write_results
    from nanoprobs.scores import compare
    before = eval_run([[-800.0, -900.0], [-1.0]], 'before')
    after = eval_run([[-1.0, -2.0], [-2000.0]], 'after')
    paths = write_results(after, compare(before, after), str(tmp_path), 'x', html=True)
    assert {os.path.splitext(p)[1] for p in paths} >= {'.json', '.csv', '.md', '.html'}
    d = json.loads(open(tmp_path / 'eval_x.json').read(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert [p['perplexity'] for p in d['pairs']] == [pytest.approx(math.exp(1.5)), None]
    assert d['pairs'][1]['mean_logprob'] == -2000.0
    assert d['comparison']['deltas'] == [1697.0, -1999.0]  # after - before, in log space: finite
    assert 'inf' in open(tmp_path / 'eval_x.html', encoding='utf-8').read()


# -----------------------------------------------------------------------------
# sample.py and beam search: what cannot fit is refused in one line; what can is streamed

def run_sample(monkeypatch, capsys, tmp_path, *args):
    """sample.py as a script, in this process: (exit code, stderr)."""
    import runpy
    import sample
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr('sys.argv', ['sample.py', *args])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(sample.__file__, run_name='__main__')
    return e.value.code, capsys.readouterr().err.strip()


@pytest.mark.parametrize('args,start', [
    (['--num_samples=1000000'], "error: num_samples=1,000,000 with html=True: the report keeps every sample's token "
                                "details in memory, so at most 10,000; use fewer samples, or --html=False"),
    (['--seed=99999999999999999999'], "error: --seed=99999999999999999999 must be a whole number from 0 to"),
    (['--seed=4294967290', '--num_samples=10', '--html=False'],
     "error: --seed=4294967290 must be a whole number from 0 to 4294967286"),
])
def test_sample_settings_that_cannot_run_are_one_line_before_loading(tmp_path, monkeypatch, capsys, args, start):
    code, err = run_sample(monkeypatch, capsys, tmp_path, '--out_dir=nowhere', *args)  # no model: checked first
    assert code == 1 and '\n' not in err and err.startswith(start), err


def test_samples_stream_one_generator_per_sample_made_when_needed(monkeypatch):
    """A million samples do not hold a million generators: SampleGenerators makes each as its batch runs, and
    the samples equal those of a list of the same generators."""
    import sample as S
    from contextlib import nullcontext
    from nanoprobs.sampling import make_generator
    made = []
    monkeypatch.setattr(S, 'make_generator', lambda d, s: made.append(s) or make_generator(d, s))
    gens = S.SampleGenerators('cpu', 7, 10 ** 6)
    assert len(gens) == 10 ** 6 and made == []
    model, prompt = tiny_model(), [464, 3290, 318]
    lazy = S.generate_samples(model, nullcontext(), prompt, 10 ** 6, 4, 1.5, None, 1.0, generator=gens,
                              batch_size=2)
    got = [next(lazy).tokens for _ in range(3)]
    assert made == [7, 8, 9, 10]  # two batches of two
    want = list(S.generate_samples(model, nullcontext(), prompt, 3, 4, 1.5, None, 1.0, batch_size=2,
                                   generator=[make_generator('cpu', 7 + i) for i in range(3)]))
    assert got == [s.tokens for s in want]


def test_beam_search_length_penalty_past_float_range_is_one_line():
    model = tiny_model()
    for lp in (-1e308, 1e308, 500.0):
        with pytest.raises(ValueError) as e:
            model.beam_search([464, 3290], 5, num_beams=2, length_penalty=lp)
        msg = one_line(e)
        assert msg.startswith(f"length_penalty={lp!r} is too large for a beam of up to 5 tokens") \
            and 'use a value from -429 to 429' in msg, msg
    beams = model.beam_search([464, 3290], 5, num_beams=2, length_penalty=-400.0)  # extreme, yet a float
    assert all(math.isfinite(b.score) for b in beams)


def test_beam_search_too_many_beams_for_memory_is_one_line(monkeypatch):
    monkeypatch.setattr(checks, 'available_memory', lambda device='cpu': 2 ** 30)  # 1 GB free
    with pytest.raises(ValueError) as e:
        tiny_model().beam_search([464, 3290], 5, num_beams=100000)
    msg = one_line(e)
    assert msg.startswith("beam search with num_beams=100,000 (a KV cache and 50,257 candidate scores per beam) "
                          "needs about 151.3 GB of memory on cpu, and ") and "1.0 GB is free: it cannot fit; use fewer beams" in msg, msg


@pytest.mark.parametrize('content,part', [
    (bytes(range(256)) * 4, "is not UTF-8 text (byte 128 is 0x80); it holds binary data (NUL or control bytes), not "
                            "text: give a text file"),
    ('Once upon a time'.encode('utf-16'), "is not UTF-8 text (byte 0 is 0xff); it is UTF-16 text: convert it with "
                                          "iconv -f utf-16 -t utf-8"),
    ('Once upon a café'.encode('latin-1'), "is not UTF-8 text (byte 15 is 0xe9); convert it to UTF-8 (e.g. iconv -f "
                                           "latin1"),
])
def test_start_file_that_is_not_text_names_it_and_the_fix(tmp_path, content, part):
    path = tmp_path / 'prompt.bin'
    path.write_bytes(content)
    with pytest.raises(ValueError) as e:
        load.read_text(f'FILE:{path}')
    assert one_line(e).startswith(f"start='FILE:{path}': '{path}' {part}"), str(e.value)
    with pytest.raises(ValueError) as e:
        load.read_text('FILE:/dev/zero')  # would be read forever
    assert one_line(e) == ("start='FILE:/dev/zero': '/dev/zero' is not a regular file (a folder, device or pipe); "
                           "give a UTF-8 text file")
    path.write_bytes(b'Once\r\nupon\n')
    assert load.read_text(f'FILE:{path}') == 'Once\nupon\n'  # as text mode reads it


# -----------------------------------------------------------------------------
# the inspection tools and the Hugging Face export on a full or read-only disk: one line, nothing half-written

def run_module(monkeypatch, capsys, cwd, module, *args):
    """python -m <module> args, in this process: (exit code, stdout, stderr)."""
    import runpy
    monkeypatch.chdir(cwd)
    monkeypatch.setattr('sys.argv', [module, *args])
    code = 0
    try:
        runpy.run_module(module, run_name='__main__', alter_sys=False)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err.strip()


@pytest.mark.parametrize('err,fix', [
    (errno.ENOSPC, "No space left on device; the disk is full: free some space, or write somewhere else"),
    (errno.EROFS, "Read-only file system; write somewhere else"),
])
def test_a_tool_on_a_full_or_read_only_disk_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, err,
                                                                           fix):
    from nanoprobs import atomic
    write_ckpt(tmp_path / 'out')
    real = atomic.write_all

    def failing(writers, *a, **k):
        def fail(tmp):
            open(tmp, 'wb').write(b'\x89PNG half')
            raise OSError(err, os.strerror(err))
        return real({p: fail for p in writers}, *a, **k)
    monkeypatch.setattr(atomic, 'write_all', failing)
    code, out, msg = run_module(monkeypatch, capsys, tmp_path, 'tools.logit_lens', '--init_from=resume', '--out_dir=out',
                                '--start=Once upon a time')
    assert code == 1 and '\n' not in msg and msg.startswith("error: results/logit_lens_out.png: "), msg
    assert msg.endswith(fix), msg
    assert os.listdir(tmp_path / 'results') == []  # no half PNG, no temporary file


def test_export_on_a_full_disk_keeps_the_earlier_export(tmp_path, monkeypatch, capsys, hf_folder):
    pytest.importorskip('transformers', reason="the export needs transformers: pip install transformers")
    from transformers import GPT2LMHeadModel
    write_ckpt(tmp_path / 'out')
    code, out, err = run_module(monkeypatch, capsys, tmp_path, 'tools.export_hf', '--out_dir=out', '--check=False',
                                '--tokenizer=False')
    assert code == 0, err
    before = {f: (tmp_path / 'out' / 'hf' / f).read_bytes() for f in os.listdir(tmp_path / 'out' / 'hf')}

    def full(self, folder, **kw):
        open(os.path.join(folder, 'model.safetensors'), 'wb').write(b'half')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(GPT2LMHeadModel, 'save_pretrained', full)
    code, out, err = run_module(monkeypatch, capsys, tmp_path, 'tools.export_hf', '--out_dir=out', '--check=False',
                                '--tokenizer=False')
    assert code == 1 and '\n' not in err, err
    assert err == (f"error: could not write the export to out/hf: [Errno 28] No space left on device; out/hf is as "
                   "it was; free some space, or give --export_dir=<a writable folder>")
    assert {f: (tmp_path / 'out' / 'hf' / f).read_bytes() for f in os.listdir(tmp_path / 'out' / 'hf')} == before
    assert sorted(os.listdir(tmp_path / 'out')) == ['ckpt.pt', 'hf']  # no staging folder left


def test_sample_summary_of_a_sample_past_float_range_says_inf():
    """A mean log-prob below -700 (a model with huge weights): exp overflowed into an OverflowError traceback."""
    import sample as S
    from nanoprobs.decoding import Sample
    s = Sample(prompt=[1], tokens=[2] * 3, logprobs=torch.full((3,), -800.0, dtype=torch.float64),
               sample_logprobs=torch.full((3,), -800.0, dtype=torch.float64))
    text = '\n'.join(S.summary(s, 1, 1, 1.0, None, 1.0))
    assert 'log-prob -2400.0000, perplexity inf)' in text


# -----------------------------------------------------------------------------
# compare_tokenizers: a run counts as done only when its training reached the end

class FakeTrain:
    """subprocess.Popen for train.py that 'trains' to iteration `reach` (saving a checkpoint, exit 0, as
    train.py does when it is stopped), optionally with a Ctrl-C reaching the waiting parent first."""

    def __init__(self, model_dir, reach, ctrl_c=False):
        self.model_dir, self.reach, self.ctrl_c = model_dir, reach, ctrl_c

    def __call__(self, argv):
        assert argv[1].endswith('train.py')
        write_ckpt(self.model_dir, iter_num=self.reach)
        return self

    def wait(self):
        if self.ctrl_c:
            self.ctrl_c = False
            raise KeyboardInterrupt
        return 0


@pytest.mark.parametrize('reach,ctrl_c,stopped', [(16, False, False), (5, False, True), (16, True, True)])
def test_compare_tokenizers_counts_an_interrupted_training_as_not_done(tmp_path, monkeypatch, reach, ctrl_c,
                                                                      stopped):
    from tools import compare_tokenizers as ct
    for k, v in dict(budget_mb=0.001, batch_size=4, block_size=16).items():
        monkeypatch.setattr(ct, k, v)  # 1,000 bytes at 1 byte per token, 64 tokens per iteration: 16 iterations
    model_dir = str(tmp_path / 'model')
    monkeypatch.setattr(ct.subprocess, 'Popen', FakeTrain(model_dir, reach, ctrl_c))
    if not stopped:
        assert ct.run_training('char', None, str(tmp_path), 1.0, model_dir)[0] == 16
        return
    with pytest.raises(UserError) as e:
        ct.run_training('char', None, str(tmp_path), 1.0, model_dir)
    assert one_line(e) == (f"training char was stopped at iteration {reach} of 16 (saved in {model_dir}); run the "
                           "same command again to continue it")
