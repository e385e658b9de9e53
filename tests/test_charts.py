"""Charts and inspection outputs a user reads: embeddings of models of different widths, tiny moves,
file names per model, and the chart defects found by looking at every PNG."""
import math
import os
import re

import pytest
import torch

import plots
from conftest import tiny_model, write_ckpt


def run_embeddings(monkeypatch, tmp_path, capsys, **settings):
    import embeddings
    monkeypatch.chdir(tmp_path)
    for k, v in {'device': 'cpu', 'results_dir': str(tmp_path / 'results'), **settings}.items():
        monkeypatch.setattr(embeddings, k, v)
    embeddings.main()
    return capsys.readouterr().out


def test_align_2d_undoes_a_rotation_reflection_and_scale():
    from embeddings import align_2d
    x = torch.randn(12, 2, dtype=torch.float64)
    x -= x.mean(0)
    t = 0.7
    r = torch.tensor([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]], dtype=torch.float64)
    y = 3.0 * (x @ r) @ torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)  # turned, mirrored, scaled
    assert torch.allclose(align_2d(y, x), x, atol=1e-10)


def test_embeddings_compare_models_of_different_widths(tmp_path, monkeypatch, capsys, gpt2_tok):
    write_ckpt(tmp_path / 'out')  # 32 channels
    write_ckpt(tmp_path / 'out-wide', tiny_model(seed=1, n_embd=48))
    out = run_embeddings(monkeypatch, tmp_path, capsys, init_from='resume', out_dir='out',
                         compare_init_from='resume', compare_out_dir='out-wide', words='king,queen,dog,cat')
    assert '32-d embeddings and out-wide/ckpt.pt 48-d: no common space' in out
    rows = re.findall(r"^  '(\w+)'\s+1  '(\w+)' -> '(\w+)'", out, re.M)
    assert [r[0] for r in rows] == ['king', 'queen', 'dog', 'cat']
    assert re.search(r'\d of 4 words keep their nearest word', out)
    assert os.path.getsize(tmp_path / 'results' / 'embeddings_out_vs_out-wide.png') > 5000


def test_embedding_moves_keep_significant_digits(tmp_path, monkeypatch, capsys, gpt2_tok):
    write_ckpt(tmp_path / 'out')
    after = tiny_model()
    with torch.no_grad():
        after.transformer.wte.weight.mul_(1 + 1e-5)  # a tiny move, as after a short fine-tuning
    write_ckpt(tmp_path / 'out-after', after)
    out = run_embeddings(monkeypatch, tmp_path, capsys, init_from='resume', out_dir='out',
                         compare_init_from='resume', compare_out_dir='out-after', words='king,queen,dog')
    rows = re.findall(r"^  '(\w+)'\s+1\s+(\S+)\s+(\S+)%", out, re.M)
    assert len(rows) == 3
    for _, moved, rel in rows:
        assert float(moved) > 0 and float(rel) == pytest.approx(1e-3, rel=0.05)  # 1e-5 of the length, in % (float32)


def test_file_tag_names_the_models():
    assert plots.file_tag('gpt2') == 'gpt2'
    assert plots.file_tag('gpt2', 'out-children/ckpt.pt') == 'gpt2_vs_out-children'
    assert plots.file_tag('/models/my model/', None) == 'my-model'
