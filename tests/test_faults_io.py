"""The fault sweep's cases (issue 18) about what the scripts read and write: eval files and results, prompt files,
sample and beam limits, full or read-only disks for the tools and the export, interrupted tokenizer comparisons."""
import errno
import json
import math
import os

import pytest
import torch

from configurator import UserError
from conftest import tiny_model, write_ckpt
from nanoprobs import checks, load
from test_faults import hf_folder, one_line  # noqa: F401 (hf_folder: a fixture shared with the loading cases)


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
    assert err == ("error: could not write the export to out/hf: [Errno 28] No space left on device; out/hf is as "
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
