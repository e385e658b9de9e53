"""
What the benchmarks say about the machine they ran on: the CPU, its load, and its memory limit for decoding.

Decoding one token reads every weight once, so the time of a matrix-vector product over a matrix larger
than the caches, in bytes per second, bounds how fast any implementation can generate:
weights_read_limit() turns it into seconds for a number of steps over a model's weights. The other
benchmarks print this; alone:

    python -m bench.machine     # the CPU line and the matrix-vector bandwidth, float32 and bfloat16
"""
import os
import re
import statistics
import time

import torch


def cpu_name():
    """The CPU's model name (Linux /proc/cpuinfo), else what platform says."""
    try:
        with open('/proc/cpuinfo') as f:
            m = re.search(r'model name\s*:\s*(.*)', f.read())
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def load_average():
    """The 1-minute load average (nan where the OS has none): other work slows every measurement."""
    return os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')


def describe():
    """One line: CPU, cores, torch threads, native bfloat16, torch version, load average."""
    from nanoprobs.load import cpu_has_bf16
    return (f"CPU: {cpu_name()}; {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}, "
            f"native bf16: {'yes' if cpu_has_bf16() else 'no'}; torch {torch.__version__}; "
            f"load average {load_average():.1f}")


def matvec_bandwidth(dtype=torch.float32, mbytes=256, repeats=15):
    """Bytes per second a matrix-vector product reads here: a (n, 4096) matrix of `mbytes` MB (beyond the
    caches) times a vector, the median of `repeats` products after two warm-ups."""
    n = mbytes * 2 ** 20 // (4096 * torch.empty((), dtype=dtype).element_size())
    w = torch.randn(n, 4096).to(dtype)
    x = torch.randn(4096).to(dtype)
    times = []
    for i in range(repeats + 2):
        t = time.perf_counter()
        torch.mv(w, x)
        if i >= 2:
            times.append(time.perf_counter() - t)
    return w.numel() * w.element_size() / statistics.median(times)


def step_bytes(model):
    """Bytes one decoding step of our GPT (in eval mode) must read: every block's weights, and the
    unembedding in the form it is read (GPT.inference_head: a float32 (C, V) copy on CPU); the embedding
    lookups read only a row each."""
    blocks = sum(p.numel() * p.element_size() for p in model.transformer.h.parameters())
    head = model.inference_head()
    head = model.lm_head.weight if head is None else head
    return blocks + head.numel() * head.element_size()


def weights_read_limit(nbytes, steps, bandwidth):
    """Seconds that reading nbytes of weights `steps` times takes at `bandwidth` bytes per second: no
    decoder that reads its weights once per step can be faster."""
    return steps * nbytes / bandwidth


if __name__ == '__main__':
    print(describe())
    for dt in (torch.float32, torch.bfloat16):
        print(f"matrix-vector product, {str(dt).replace('torch.', '')}: {matvec_bandwidth(dt) / 1e9:.1f} GB/s")
