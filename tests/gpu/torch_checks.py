"""PyTorch checks of the real-GPU suite, one per invocation, printing KEY=VALUE lines.

  torch_checks.py memcap BYTES       mem_get_info shows the cap; allocating past it raises
                                     torch.cuda.OutOfMemoryError; the process frees and goes on
  torch_checks.py train              a small MLP trained with a fixed seed; prints the losses
  torch_checks.py gemm               a cuBLAS GEMM; prints a digest of the result
  torch_checks.py launches N         N tiny kernels (launch-bound); prints the median time
  torch_checks.py step N             N training steps of a larger MLP; prints the median step time
"""
import hashlib
import statistics
import sys
import time

import torch


def memcap(cap):
    free, total = torch.cuda.mem_get_info()
    print(f"total={total}")
    print(f"free={free}")
    keep = torch.empty(cap // 4, dtype=torch.uint8, device="cuda")  # a quarter of the cap
    try:
        torch.empty(cap, dtype=torch.uint8, device="cuda")  # more than is left
        print("oom=none")
    except torch.cuda.OutOfMemoryError:
        print("oom=OutOfMemoryError")
    del keep
    torch.cuda.empty_cache()
    again = torch.ones(cap // 4, dtype=torch.uint8, device="cuda")
    print(f"after_oom_sum={int(again.sum().item())}")


def train():
    torch.manual_seed(1234)
    torch.backends.cudnn.deterministic = True
    torch.backends.cuda.matmul.allow_tf32 = False
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(512, 256, device="cuda")
    y = torch.randint(0, 10, (512,), device="cuda")
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print("losses=" + ",".join(repr(v) for v in losses))


def gemm():
    torch.manual_seed(7)
    torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn(1024, 1024, device="cuda")
    b = torch.randn(1024, 1024, device="cuda")
    c = (a @ b).cpu().numpy().tobytes()
    print("gemm_sha256=" + hashlib.sha256(c).hexdigest())


def launches(n):
    x = torch.zeros(1, device="cuda")
    times = []
    for _ in range(7):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            x.add_(1)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / n)
    print(f"launch_us={statistics.median(times) * 1e6:.3f}")


def step(n):
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(2048, 2048) for _ in range(8)]).cuda()
    opt = torch.optim.Adam(model.parameters())
    x = torch.randn(256, 2048, device="cuda")
    times = []
    for i in range(n):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    print(f"step_ms={statistics.median(times) * 1e3:.3f}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "memcap":
        memcap(int(sys.argv[2]))
    elif cmd == "train":
        train()
    elif cmd == "gemm":
        gemm()
    elif cmd == "launches":
        launches(int(sys.argv[2]))
    elif cmd == "step":
        step(int(sys.argv[2]))
    else:
        sys.exit(f"unknown check {cmd}")
