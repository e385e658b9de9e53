"""Files written by the previous layout (commit a8f22ce) load as before: checkpoint, meta.pkl, eval results, HF export."""
import json
import math
import shutil

import pytest
import torch

from conftest import ROOT, run_script
from nanoprobs import load, tokenizer
from nanoprobs.pairs import read_results

OLD = ROOT / 'tests' / 'fixtures' / 'old_layout'  # how they were made: its README.md


@pytest.fixture
def old(tmp_path):
    """A copy of the old files, so that nothing a test runs writes into the repository."""
    shutil.copytree(OLD, tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_the_old_checkpoint_loads_and_samples(old):
    ckpt = load.load_checkpoint(old / 'out')
    assert ckpt['iter_num'] == 4 and ckpt['model_args']['n_embd'] == 16
    loaded = load.load_model('resume', str(old / 'out'), device='cpu', dtype='float32')
    assert loaded.tok.kind == 'char'
    proc = run_script('sample.py', '--out_dir=out', '--start=Once', '--num_samples=1', '--max_new_tokens=5',
                      '--device=cpu', '--show_probs=False', '--seed=3', cwd=old)
    assert 'Once' in proc.stdout and 'Traceback' not in proc.stderr


def test_the_old_meta_pkl_round_trips_text(old):
    tok = tokenizer.char_tokenizer(str(old / 'data' / 'tiny_char' / 'meta.pkl'))
    text = 'Once upon a time there was a little girl.'
    assert tok.decode(tok.encode(text)) == text
    assert tokenizer.data_tokenizer(str(old / 'data' / 'tiny_char')).encode(text) == tok.encode(text)


def test_the_old_eval_result_is_a_before_for_a_new_run(old):
    before = read_results(str(old / 'results' / 'eval_old.json'))
    assert before is not None
    proc = run_script('eval.py', '--out_dir=out', '--eval_data=pairs.json', '--name=new', '--device=cpu', '--html=False',
               '--compare_to=results/eval_old.json', cwd=old)
    new, was = (json.loads((old / 'results' / f).read_text()) for f in ('eval_new.json', 'eval_old.json'))
    # the same checkpoint and pairs: the new code gives the old numbers, pair by pair
    for a, b in zip(new['pairs'], was['pairs']):
        assert math.isclose(a['logprob'], b['logprob'], rel_tol=0, abs_tol=1e-9), (a, b)
    assert new['pairs'] and before.model == was['model']
    assert 'before' in proc.stdout and was['model'] in proc.stdout  # the comparison names the old run


def test_the_old_hf_export_loads_and_matches_transformers(old):
    from transformers import GPT2LMHeadModel
    hf = GPT2LMHeadModel.from_pretrained(old / 'hf').eval().double()
    ours = load.pretrained_model('hf', str(old / 'hf')).eval().double()  # the loader init_from=<folder> runs
    ids = torch.tensor([[5, 9, 12, 3, 7, 1]])
    with torch.no_grad():
        ref = hf(ids).logits  # (1, T, vocab)
        got, _ = ours(ids, targets=ids)  # targets: logits at every position, as transformers gives
    assert torch.allclose(got, ref, atol=1e-10, rtol=0)
