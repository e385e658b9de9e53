"""Layer freezing (freeze.py, train.py --freeze_layers): which weights train, the tied lm_head, AdamW state
only for trainable parameters, resume keeps the setting and refuses another, upstream's checkpoint layout."""
import re

import numpy as np
import pytest
import torch

from nanoprobs import freeze
from configurator import configure
from conftest import run_script, tiny_model, write_ckpt

ARGS = dict(batch_size=4, block_size=16, gradient_accumulation_steps=1, eval_iters=1, eval_interval=1000,
            log_interval=1, learning_rate=1e-2, warmup_iters=0, decay_lr=False, weight_decay=0.1,
            always_save_checkpoint=True, progress=False, plot=False, compile=False, device='cpu')


def args(out_dir, data_dir, **kw):
    return [f'--{k}={v}' for k, v in {**ARGS, 'out_dir': out_dir, 'data_dir': data_dir, **kw}.items()]


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """GPT-2 token ids (no meta.pkl) and a tiny 2-block model with biases to start from."""
    d = tmp_path_factory.mktemp('freeze')
    ids = np.random.default_rng(0).integers(1000, 1200, 6000).astype(np.uint16)
    ids[:5000].tofile(d / 'train.bin')
    ids[5000:].tofile(d / 'val.bin')
    write_ckpt(d / 'base', tiny_model(seed=3))
    return d


def frozen_names(model):
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def test_freeze_sets_requires_grad_and_counts():
    m = tiny_model()
    total = sum(p.numel() for p in m.parameters())
    assert freeze.freeze(m, 0) == (total, total) and not frozen_names(m)

    trainable, total2 = freeze.freeze(m, 1)
    assert total2 == total
    assert frozen_names(m) == {'transformer.wte.weight', 'transformer.wpe.weight'} | {
        n for n, _ in m.named_parameters() if n.startswith('transformer.h.0.')}
    assert not m.lm_head.weight.requires_grad  # the same tensor as wte: frozen with it
    assert trainable == sum(p.numel() for n, p in m.named_parameters() if n not in frozen_names(m))
    assert any(n.startswith('transformer.h.1.') for n, p in m.named_parameters() if p.requires_grad)

    # -1: every block; only ln_f trains, or ln_f and the tied matrix ("head only")
    freeze.freeze(m, -1)
    assert {n for n, p in m.named_parameters() if p.requires_grad} == {'transformer.ln_f.weight', 'transformer.ln_f.bias'}
    trainable, _ = freeze.freeze(m, -1, train_tied_head=True)
    assert {n for n, p in m.named_parameters() if p.requires_grad} == {
        'transformer.wte.weight', 'transformer.ln_f.weight', 'transformer.ln_f.bias'}
    assert m.lm_head.weight.requires_grad and trainable == m.lm_head.weight.numel() + 2 * 32

    lines = freeze.describe(m, -1, True, trainable, total)
    assert 'tied' in lines[0] and f"parameters: {trainable:,} trainable of {total:,}" in lines[1]
    mib = 3 * 4 * (total - trainable) / 2**20  # float32 weights: gradient + exp_avg + exp_avg_sq
    assert f"{mib:,.1f} MiB saved" in lines[2]
    for bad in (3, -2):
        with pytest.raises(freeze.FreezeError, match=f"freeze_layers={bad}: the model has 2 blocks"):
            freeze.freeze(m, bad)


def test_configure_reports_the_keys_arguments_and_config_files_set(tmp_path):
    """What train.py's resume rule reads: a freezing key given explicitly, even at its current value."""
    g = {'freeze_layers': 0, 'train_tied_head': False, 'batch_size': 4}
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("batch_size = 8\n")
    assert configure(dict(g), [str(cfg), '--batch_size=2']) == {'batch_size'}
    assert configure(dict(g), ['--freeze_layers=0']) == {'freeze_layers'}  # the default value, set explicitly
    cfg.write_text("train_tied_head = False\nfreeze_layers: int = 0\n")  # both unchanged, both asked for
    assert configure(dict(g), [str(cfg)]) == {'train_tied_head', 'freeze_layers'}


def test_resumed_keeps_the_checkpoint_setting():
    cur = {'freeze_layers': 0, 'train_tied_head': False}
    assert freeze.resumed({'freeze_layers': 1, 'train_tied_head': True}, cur, set()) == (1, True)
    assert freeze.resumed({'dataset': 'x'}, cur, {'freeze_layers'}) == (0, False)  # upstream's: none frozen
    with pytest.raises(freeze.FreezeError, match=r"trained with freeze_layers=1.*asks for freeze_layers=0"):
        freeze.resumed({'freeze_layers': 1}, cur, {'freeze_layers'})
    with pytest.raises(freeze.FreezeError, match="asks for freeze_layers=2"):
        freeze.resumed(None, {**cur, 'freeze_layers': 2}, {'freeze_layers'})


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def test_training_with_frozen_layers_and_resume(setup, tmp_path):
    out = tmp_path / 'out'
    base = load(setup / 'base' / 'ckpt.pt')['model']
    base['transformer.wpe.weight'] = base['transformer.wpe.weight'][:16]  # cropped to block_size
    proc = run_script('train.py', *args(out, setup, init_from=setup / 'base' / 'ckpt.pt', max_iters=3,
                                        freeze_layers=1), cwd=tmp_path)
    m = tiny_model(block_size=16)  # train.py crops the position embedding to block_size
    trainable, total = freeze.freeze(m, 1)
    assert f"parameters: {trainable:,} trainable of {total:,}" in proc.stdout
    assert re.search(r"lm_head is tied to the token embedding.*frozen with it", proc.stdout)
    assert 'MiB saved' in proc.stdout
    frozen = frozen_names(m) | {'lm_head.weight'}
    ck = load(out / 'ckpt.pt')
    assert ck['config']['freeze_layers'] == 1 and ck['config']['train_tied_head'] is False
    for k, v in ck['model'].items():
        if k in frozen:
            assert torch.equal(v, base[k]), k  # bit for bit: no update, no weight decay
        elif k.endswith('.weight') and 'ln_' not in k:
            assert not torch.equal(v, base[k]), k

    # AdamW: upstream's two groups over every parameter (upstream resumes it), state only for trainable ones
    names = [n for n, p in m.named_parameters() if p.dim() >= 2] + [n for n, p in m.named_parameters() if p.dim() < 2]
    opt = ck['optimizer']
    assert [len(g['params']) for g in opt['param_groups']] == [sum(p.dim() >= 2 for p in m.parameters()),
                                                               sum(p.dim() < 2 for p in m.parameters())]
    assert {names[i] for i in opt['state']} == {n for n, p in m.named_parameters() if p.requires_grad}
    upstream = torch.optim.AdamW([{'params': [p for p in m.parameters() if p.dim() >= 2]},
                                  {'params': [p for p in m.parameters() if p.dim() < 2]}])
    upstream.load_state_dict(opt)  # what upstream's resume does (it freezes nothing)

    # resume without the flag: still frozen; the same flag again is fine; another one is an error
    proc = run_script('train.py', *args(out, setup, init_from='resume', max_iters=5), cwd=tmp_path)
    assert 'freeze_layers=1: frozen' in proc.stdout
    ck = load(out / 'ckpt.pt')
    assert ck['iter_num'] == 5 and ck['config']['freeze_layers'] == 1
    assert all(torch.equal(ck['model'][k], base[k]) for k in frozen)
    run_script('train.py', *args(out, setup, init_from='resume', max_iters=6, freeze_layers=1), cwd=tmp_path)
    proc = run_script('train.py', *args(out, setup, init_from='resume', max_iters=7, freeze_layers=0),
                      cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert re.search(r"error: .*trained with freeze_layers=1.*asks for freeze_layers=0", proc.stderr)
    assert load(out / 'ckpt.pt')['iter_num'] == 6  # nothing changed


def test_upstream_checkpoint_resumes_unfrozen_and_refuses_new_freezing(setup, tmp_path):
    out = tmp_path / 'up'
    write_ckpt(out, tiny_model(seed=3), config={'dataset': 'none'})  # upstream's: no freezing keys
    proc = run_script('train.py', *args(out, setup, init_from='resume', max_iters=1, freeze_layers=-1),
                      cwd=tmp_path, check=False)
    assert proc.returncode == 1 and 'trained with freeze_layers=0' in proc.stderr
    proc = run_script('train.py', *args(out, setup, init_from='resume', max_iters=1), cwd=tmp_path)
    m = tiny_model(block_size=16)
    n = sum(p.numel() for p in m.parameters())
    assert f"parameters: {n:,} trainable of {n:,} (100.0%)" in proc.stdout
