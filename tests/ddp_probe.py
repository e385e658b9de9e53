"""torchrun tests/ddp_probe.py <train.py args>: runs train.py, and at its end compares every rank's
weights (DDP keeps them identical only if gradients are really all-reduced). Not a test file itself."""
import os
import runpy
import sys

import torch
import torch.distributed as dist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_destroy = dist.destroy_process_group


def destroy(*a, **k):
    model = sys.modules['__main__'].raw_model  # train.py's globals (run_path runs it as __main__)
    sums = torch.stack([p.detach().double().sum() for p in model.parameters()]).cpu()
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, sums)
    if dist.get_rank() == 0:
        print('ranks hold identical weights:', all(torch.equal(out[0], o) for o in out), flush=True)
    _destroy(*a, **k)


dist.destroy_process_group = destroy
sys.path.insert(0, ROOT)
sys.argv = [os.path.join(ROOT, 'train.py')] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
