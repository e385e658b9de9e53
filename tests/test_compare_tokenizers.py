"""compare_tokenizers.py on a tiny corpus: statistics, the token-boundary figure, equal-bytes training of a tiny
model per tokenizer, bits per byte on identical val text, the table and charts, and a resume that retrains nothing."""
import json

from conftest import run_script

TEXT = ("Once upon a time a little hen found a grain of wheat. \"Who will plant this wheat?\" she asked.\n"
        "\"Not I,\" said the duck. \"Not I,\" said the cat. So the little hen planted it herself.\n")


def test_compare_tokenizers_end_to_end(tmp_path):
    (tmp_path / 'c.txt').write_text('\n\n'.join(TEXT.replace('hen', w) for w in ['hen', 'fox', 'owl', 'bee'] * 6))
    args = ['--input=c.txt', '--out=res', '--work_dir=w', '--tokenizers=char,gpt2,bpe-300,bpe-300-noregex',
            '--train_tokenizers=char,bpe-300', '--train=True', '--budget_mb=0.004', '--n_layer=1', '--n_head=2',
            '--n_embd=16', '--block_size=16', '--batch_size=4', '--evals=2', '--eval_iters=1', '--val_bytes=600',
            '--sample_bytes=40', '--learning_rate=1e-2']
    out = run_script('tools.compare_tokenizers', *args, cwd=tmp_path).stdout
    res = json.loads((tmp_path / 'res' / 'comparison.json').read_text())
    stats = {s['name']: s for s in res['stats']}
    assert list(stats) == ['char', 'gpt2', 'bpe-300', 'bpe-300-noregex']
    assert stats['gpt2']['vocab_size'] == 50257 and stats['bpe-300']['vocab_size'] == 300
    # bytes per token: the val text's bytes over its tokens; characters of this ASCII text are 1 byte each
    assert stats['char']['bytes_per_token'] == 1.0
    assert stats['bpe-300-noregex']['bytes_per_token'] > stats['bpe-300']['bytes_per_token'] > 1.5
    runs = {r['name']: r for r in res['runs']}
    assert set(runs) == {'char', 'bpe-300'}
    # equal bytes of text seen: iterations differ by the tokenizers' bytes per token, bytes seen do not
    assert runs['char']['iters'] > runs['bpe-300']['iters']
    for r in runs.values():
        assert abs(r['bytes_seen'] - 4000) <= 16 * 4 * 4.5  # within one iteration of the budget
    # identical val text: the same bytes predicted by both; bits per byte = total bits over those bytes
    assert runs['char']['val_bytes'] == runs['bpe-300']['val_bytes'] > 300
    # (bits per byte itself is checked against a hand computation in test_tokenizers.py)
    for r in runs.values():
        assert r['sample'].startswith('Once upon a time') and len(r['curve']) >= 2
    md = (tmp_path / 'res' / 'comparison.md').read_text()
    assert f"| char | {stats['char']['vocab_size']} | 1.000 |" in md
    assert f"**{runs['char']['val_bits_per_byte']:.4f}**" in md and 'token_boundaries.png' in md
    for png in ('token_boundaries.png', 'loss_vs_bytes.png'):
        assert (tmp_path / 'res' / png).read_bytes()[:4] == b'\x89PNG'
    # resumable: a second run reads the finished results and trains nothing
    ckpt = tmp_path / 'w' / 'char' / 'model' / 'ckpt.pt'
    before = ckpt.stat().st_mtime_ns
    out = run_script('tools.compare_tokenizers', *args, cwd=tmp_path).stdout
    assert 'char: done before' in out and 'bpe-300: done before' in out and 'iterations of' not in out
    assert ckpt.stat().st_mtime_ns == before
    assert json.loads((tmp_path / 'res' / 'comparison.json').read_text())['runs'] == res['runs']


def test_compare_tokenizers_bad_spec(tmp_path):
    (tmp_path / 'c.txt').write_text(TEXT * 20)
    proc = run_script('tools.compare_tokenizers', '--input=c.txt', '--tokenizers=char,wordpiece', cwd=tmp_path,
                      check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: tokenizer 'wordpiece': use char, gpt2, bpe-")


def _interrupt_at(tmp_path, marker, args):
    """Run compare_tokenizers in its own process group and send the group SIGINT (a terminal's Ctrl-C) as
    soon as a stdout line holds marker; (exit status, stdout, stderr)."""
    import os
    import signal
    import subprocess
    import sys
    from conftest import ROOT
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT)}
    proc = subprocess.Popen([sys.executable, '-m', 'tools.compare_tokenizers', *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            os.killpg(proc.pid, signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    return proc.returncode, ''.join(lines) + out, err


def test_ctrl_c_while_tokenizers_train_or_models_are_evaluated_is_one_line(tmp_path):
    (tmp_path / 'c.txt').write_text('\n\n'.join(TEXT.replace('hen', w) for w in ['hen', 'fox', 'owl', 'bee'] * 6))
    args = ['--input=c.txt', '--out=res', '--work_dir=w', '--tokenizers=char,bpe-300', '--train_tokenizers=char,bpe-300',
            '--train=True', '--budget_mb=0.004', '--n_layer=1', '--n_head=2', '--n_embd=16', '--block_size=16',
            '--batch_size=4', '--evals=2', '--eval_iters=1', '--val_bytes=600', '--sample_bytes=40']
    for marker in ('--- bpe-300: preparing', '--- char: evaluating'):  # training tokenizers; evaluating
        rc, out, err = _interrupt_at(tmp_path, marker, args)
        assert 'Traceback' not in err and 'KeyboardInterrupt' not in err, err
        last = err.strip().splitlines()[-1]
        if rc == 130:  # stopped outside a training: what was kept, and that a rerun resumes
            assert last.startswith('interrupted; kept in w:') and last.endswith('run the same command again to resume')
            for name in ('char', 'bpe-300'):  # a run counts as done only with its result, written at its end
                assert (tmp_path / 'w' / name / 'model' / 'result.json').exists() == (f"{name}'s model" in last)
        else:  # the signal reached a training under way: it saved, and says so
            assert rc == 1 and 'was stopped at iteration' in last, err
    # the rerun resumes: everything left is finished, nothing counted twice
    out = run_script('tools.compare_tokenizers', *args, cwd=tmp_path).stdout
    assert json.loads((tmp_path / 'res' / 'comparison.json').read_text())['runs'][0]['name'] == 'char'
