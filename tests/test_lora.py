"""LoRA (nanoprobs/lora.py, train.py --lora_rank): PEFT's adapters on our GPT give transformers' logits,
merged == unmerged, the checkpoint holds adapters + a checked base reference, exact resume, refusals,
every script loads the run, and tools/export_hf writes both the PEFT folder and the merged model."""
import os

import numpy as np
import pytest
import torch

pytest.importorskip('peft', reason="LoRA needs PEFT: pip install peft")

from configurator import UserError  # noqa: E402
from conftest import make_hf_dir, tiny_model, write_ckpt  # noqa: E402
from model import GPT, Linear  # noqa: E402
from nanoprobs import atomic, load, lora  # noqa: E402
from test_train import curve, read_log, train_here  # noqa: E402

SETTINGS = lora.Settings(rank=4, alpha=8.0, dropout=0.0, targets=lora.TARGETS)
TRAIN = dict(block_size=16, batch_size=4, gradient_accumulation_steps=2, eval_iters=2, eval_interval=4,
             always_save_checkpoint=True, learning_rate=1e-2, lr_decay_iters=8, min_lr=1e-3, dropout=0.1,
             lora_rank=4, lora_dropout=0.2)


def logits(model, x):
    with torch.no_grad():
        return model(x, all_logits=True)[0]


def randomize_adapters(model, seed=0):
    """Adapters as after training (PEFT starts B at zero, which would make every comparison trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if 'lora_' in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.parametrize('targets', [lora.TARGETS, ('attn.c_proj', 'mlp.c_fc')])
def test_adapters_load_onto_transformers_gpt2_with_the_same_logits(tmp_path, targets):
    """Our GPT with PEFT's adapters, written as PEFT's folder, loaded by PeftModel.from_pretrained onto
    transformers' GPT2LMHeadModel of the same base: the same logits (fp32); merging changes nothing."""
    from peft import PeftModel
    from transformers import GPT2LMHeadModel
    make_hf_dir(tmp_path / 'base')
    model = GPT.from_pretrained(str(tmp_path / 'base'))
    x = torch.randint(0, 50257, (2, 32), generator=torch.Generator().manual_seed(1))
    before = logits(model, x)
    base = lora.Base.of(str(tmp_path / 'base'), model)
    lora.attach(model, lora.Settings(4, 8.0, 0.0, targets))
    randomize_adapters(model)
    model.eval()
    ours = logits(model, x)
    assert (ours - before).abs().max() > 0.1  # the adapters change the function: not a trivial comparison
    ckpt = lora.Run(lora.Settings(4, 8.0, 0.0, targets), base).checkpoint(load.checkpoint_dict(model), model)
    assert 'model' not in ckpt and all(k.startswith('base_model.model.transformer.h.') and '.lora_' in k
                                       for k in ckpt['lora']['adapter'])
    lora.write_peft(tmp_path / 'adapter', ckpt, str(tmp_path / 'base'))
    assert sorted(os.listdir(tmp_path / 'adapter')) == ['adapter_config.json', 'adapter_model.safetensors']
    hf = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(tmp_path / 'base'), tmp_path / 'adapter')
    theirs = hf.eval()(x).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    # merged into the base weights: a plain GPT, the same logits
    merged = lora.merge(model)
    assert not any('lora' in n for n, _ in merged.named_parameters()) and type(merged.transformer.h[0].attn
                                                                                 .c_attn) is Linear
    torch.testing.assert_close(logits(merged, x), ours, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A tiny base checkpoint, GPT-2 token ids, and a LoRA run of 8 iterations on them (dropout on)."""
    d = tmp_path_factory.mktemp('lora')
    ids = np.random.default_rng(0).integers(1000, 1100, 6000).astype(np.uint16)
    ids[:5000].tofile(d / 'train.bin')
    ids[5000:].tofile(d / 'val.bin')
    write_ckpt(d / 'base', tiny_model(seed=3))
    return d


def train(monkeypatch, capsys, out, d, **kw):
    train_here(monkeypatch, out, d, **{**TRAIN, 'init_from': d / 'base' / 'ckpt.pt', **kw})
    return capsys.readouterr().out


def test_lora_training_saves_adapters_only_and_resumes_exactly(run, tmp_path, monkeypatch, capsys):
    base_file = run / 'base' / 'ckpt.pt'
    base_bytes = base_file.read_bytes()
    out = train(monkeypatch, capsys, tmp_path / 'a', run, max_iters=8)
    ck = load.load_checkpoint(tmp_path / 'a')
    trainable = sum(v.numel() for v in ck['lora']['adapter'].values())
    total = sum(p.numel() for p in tiny_model(block_size=16).parameters()) + trainable  # cropped to 16
    assert f"parameters: {trainable:,} trainable of {total:,}" in out
    assert f"ckpt.pt ({lora_size(tmp_path / 'a')})" in out  # the checkpoint's size, printed
    # the checkpoint: adapters, their AdamW state, the base by name and checksum; no base weights
    assert 'model' not in ck and ck['lora']['base']['path'] == str(base_file)
    assert ck['lora']['base']['sha256'] == lora.checksum(load.model_from_checkpoint(load.load_checkpoint(base_file)))
    assert len(ck['optimizer']['state']) == len(ck['lora']['adapter'])  # AdamW moments of the adapters only
    assert os.path.getsize(tmp_path / 'a' / 'ckpt.pt') < os.path.getsize(base_file) / 10
    assert base_file.read_bytes() == base_bytes
    ev = [(int(r['iter']), float(r['val_loss'])) for r in read_log(tmp_path / 'a') if r['kind'] == 'eval']
    assert [i for i, _ in ev] == [0, 4, 8] and ev[-1][1] < ev[0][1]  # the adapters learn

    # 4 iterations, stop, resume for 4 more (without repeating the LoRA flags): the same curve, bit for bit
    train(monkeypatch, capsys, tmp_path / 'b', run, max_iters=4)
    out = train(monkeypatch, capsys, tmp_path / 'b', run, max_iters=8, init_from='resume', lora_rank=4)
    assert 'Resuming training from' in out and 'settings differ' not in out
    assert curve(read_log(tmp_path / 'a')) == curve(read_log(tmp_path / 'b'))
    sa, sb = ck['lora']['adapter'], load.load_checkpoint(tmp_path / 'b')['lora']['adapter']
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

    # a resume that asks for other adapters, or for freezing, stops in one line and changes nothing
    for kw, msg in ((dict(lora_rank=8), "trained with LoRA (lora_rank=4, "), (dict(lora_targets='c_fc'), "asks for "
                    "lora_targets='c_fc'"), (dict(freeze_layers=1), "asks for freeze_layers=1")):
        with pytest.raises(UserError) as e:
            train(monkeypatch, capsys, tmp_path / 'b', run, max_iters=9, init_from='resume', **kw)
        assert msg in str(e.value) and '\n' not in str(e.value)
    assert load.load_checkpoint(tmp_path / 'b')['iter_num'] == 8


def lora_size(out_dir):
    from nanoprobs.formatting import file_size
    return file_size(os.path.getsize(os.path.join(out_dir, 'ckpt.pt')))


def test_a_lora_run_loads_like_any_other_and_its_base_is_checked(run, tmp_path, monkeypatch, capsys):
    """load_model (what sample.py, eval.py, serve.py and the tools call) merges the adapters: the logits of
    PEFT's unmerged model; a base that changed since is refused in one line; export_hf writes both ways."""
    from peft import PeftModel
    from transformers import GPT2LMHeadModel
    from tools import export_hf
    out = tmp_path / 'out'
    train(monkeypatch, capsys, out, run, max_iters=4, eval_interval=4)
    ckpt = load.load_checkpoint(out)
    with torch.no_grad():  # the trained B is small after 4 steps: make the comparison telling
        for k, v in ckpt['lora']['adapter'].items():
            v.mul_(20)
    # written beside and renamed over, as train.py does: the loaded checkpoint is memory-mapped, and a file
    # rewritten in place under a mapping is lost to the process that maps it (SIGBUS)
    atomic.write_all({str(out / 'ckpt.pt'): lambda tmp: torch.save(ckpt, tmp)})
    loaded = load.load_model('resume', str(out), device='cpu', dtype='float32')
    unmerged = load.model_from_checkpoint(ckpt, None, 'x', merge=False).eval()
    base = load.model_from_checkpoint(load.load_checkpoint(run / 'base'))
    x = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(2))
    assert type(loaded.model) is GPT and loaded.model.config.block_size == 16
    assert (logits(unmerged, x) - logits(base, x)).abs().max() > 0.1
    # in float64: with adapters this large, float32 rounding alone moves these logits by ~1e-4 (merged or
    # not), while the merge itself (W + B @ A rounded to float32 once) moves them by less than 1e-4
    exact = logits(unmerged.double(), x)
    assert (logits(loaded.model, x).double() - exact).abs().max() < 1e-3
    merged64 = load.load_model('resume', str(out), device='cpu', dtype='float64').model
    torch.testing.assert_close(logits(merged64, x), exact, atol=1e-4, rtol=0)
    unmerged.float()

    # export: PEFT's folder (the nanoGPT base written beside it) and the merged GPT-2 folder
    for merge, folder in ((False, 'adapter'), (True, 'hf')):
        for k, v in dict(init_from='resume', out_dir=str(out), export_dir='', merge=merge, check=True).items():
            monkeypatch.setattr(export_hf, k, v)
        export_hf.main()
        assert "check: transformers' logits match ours (adapters unmerged)" in capsys.readouterr().out
    hf = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(out / 'adapter' / 'base'), out / 'adapter')
    torch.testing.assert_close(hf.eval()(x).logits, logits(unmerged, x), atol=1e-5, rtol=1e-5)
    merged = GPT2LMHeadModel.from_pretrained(out / 'hf').eval()
    torch.testing.assert_close(merged(x).logits, logits(loaded.model, x), atol=1e-5, rtol=1e-5)  # ours, merged

    # the base changes (trained on, say): the adapters no longer belong to it
    write_ckpt(tmp_path / 'moved', tiny_model(seed=4))
    os.replace(tmp_path / 'moved' / 'ckpt.pt', run / 'base' / 'ckpt.pt')
    try:
        with pytest.raises(ValueError, match=r"trained on .*base/ckpt.pt with weights of SHA-256") as e:
            load.load_model('resume', str(out), device='cpu')
        assert '\n' not in str(e.value)
    finally:
        write_ckpt(run / 'base', tiny_model(seed=3))


@pytest.mark.parametrize('kw,message', [
    (dict(freeze_layers=2), "freeze_layers=2 with lora_rank=4: LoRA already freezes every base weight"),
    (dict(init_from='scratch'), "lora_rank=4 with init_from='scratch': LoRA adapts a trained model"),
    (dict(lora_targets='c_proj'), "lora_targets='c_proj': unknown layer 'c_proj' (ambiguous"),
    (dict(lora_alpha=0), "lora_alpha=0.0 must be a positive number"),
    (dict(lora_dropout=1.0), "lora_dropout=1.0 must be at least 0 and less than 1"),
    (dict(lora_rank=-1), "lora_rank=-1 must be at least 0"),
])
def test_lora_settings_that_cannot_apply_fail_before_any_work(tmp_path, monkeypatch, kw, message):
    with pytest.raises(UserError) as e:
        train_here(monkeypatch, tmp_path / 'out', tmp_path / 'nodata', **{'init_from': 'gpt2', 'lora_rank': 4, **kw})
    assert str(e.value).startswith(message) and '\n' not in str(e.value)
    assert not (tmp_path / 'out').exists()
