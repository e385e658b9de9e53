"""trainstate.py: RNG snapshots that survive a weights_only checkpoint, which file a resume reads, stale
temp files, the loss log cut back to the checkpoint."""
import os
import random
import time

import numpy as np
import pytest
import torch

from conftest import dead_pid
from nanoprobs import trainstate
from configurator import UserError


def draws(gen):
    return (torch.rand(3).tolist(), random.random(), np.random.rand(2).tolist(),
            torch.randint(1000, (4,), generator=gen).tolist())


def test_rng_snapshot_restores_every_generator_through_a_checkpoint(tmp_path):
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    draws(gen)  # somewhere in the middle of a run
    snap = trainstate.rng_snapshot(gen.get_state(), 'cpu')
    torch.save({'rng': [snap]}, tmp_path / 's.pt')
    expected = draws(gen)
    draws(gen)  # the run goes on, then is resumed elsewhere
    other = torch.Generator().manual_seed(99)
    trainstate.restore_rng(torch.load(tmp_path / 's.pt', weights_only=True)['rng'][0], other, 'cpu')
    assert draws(other) == expected


def test_resume_path_takes_the_newer_file_and_stale_saves_go(tmp_path, capsys):
    ckpt, last = tmp_path / trainstate.CKPT, tmp_path / trainstate.LAST
    assert trainstate.resume_path(tmp_path) == str(ckpt)  # none yet: the error names ckpt.pt
    last.write_bytes(b'x')
    assert trainstate.resume_path(tmp_path) == str(last)
    ckpt.write_bytes(b'x')
    os.utime(last, (time.time() - 60, time.time() - 60))
    assert trainstate.resume_path(tmp_path) == str(ckpt)
    dead = dead_pid()
    (tmp_path / f'ckpt.tmp{dead}-0123abcd.pt').write_bytes(b'half')
    (tmp_path / f'ckpt_last.tmp{dead}-0123abcd.pt').write_bytes(b'half')
    live = f'ckpt.tmp{os.getpid()}-0123abcd.pt'  # a save in progress in another run: kept
    (tmp_path / live).write_bytes(b'half')
    trainstate.remove_stale_saves(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted([trainstate.CKPT, trainstate.LAST, live])
    assert f'removed ckpt.tmp{dead}-0123abcd.pt' in capsys.readouterr().out


def test_loss_log_on_resume_keeps_only_rows_before_the_checkpoint(tmp_path):
    path = tmp_path / 'log.csv'
    log = trainstate.LossLog(str(path))
    log.start(False, 0, evaluated=False)
    for it in range(4):
        if it % 2 == 0:
            log.add('eval', it, 10 * it, 0.1, 1.0, 5.0 - it, 6.0 - it)
        log.add('step', it, 10 * it, 0.1, 1.0, 5.0 - it)
    again = trainstate.LossLog(str(path))
    again.start(True, 2, evaluated=True)  # the checkpoint of iter 2, saved after its eval
    assert again.history == {'step': [(0, 5.0), (1, 4.0)], 'eval': [(0, 5.0, 6.0), (2, 3.0, 4.0)]}
    again.start(True, 2, evaluated=False)  # its eval is redone after the resume
    assert again.history['eval'][-1] == (0, 5.0, 6.0) and len(again.history['step']) == 2


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='needs /dev/full (Linux): always full')
def test_loss_log_on_a_full_disk_is_one_line(tmp_path):
    (tmp_path / trainstate.CKPT).write_bytes(b'x')
    log = trainstate.LossLog('/dev/full')
    with pytest.raises(UserError,
                       match=r'^could not write /dev/full: No space left on device( \([\d,]+ MB free on that disk\))?; nothing was saved$'):
        log.add('step', 0, 0, 0.1, 1.0, 5.0)
    assert log.history['step'] == []  # nothing remembered that is not in the log
    assert trainstate.kept_checkpoints(str(tmp_path / 'log.csv')) == (
        f"{tmp_path / trainstate.CKPT} is as before; fix the cause, then continue with --init_from=resume")
