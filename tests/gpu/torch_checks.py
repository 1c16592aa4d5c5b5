"""PyTorch checks of the real-GPU suite, one per invocation, printing KEY=VALUE lines.

  torch_checks.py memcap BYTES       mem_get_info shows the cap; allocating past it raises
                                     torch.cuda.OutOfMemoryError; the process frees and goes on
  torch_checks.py train              a small MLP trained with a fixed seed; prints the losses
  torch_checks.py gemm               a cuBLAS GEMM; prints a digest of the result
  torch_checks.py launches N         N tiny kernels (launch-bound); prints the median time
  torch_checks.py step N             N training steps of a larger MLP; prints the median step time
  torch_checks.py trainer SECONDS    trains a GEMM-heavy MLP for SECONDS; prints each step's end time
                                     (for shares counted over the window two trainers share)
  torch_checks.py graph              a model captured in a CUDA graph and replayed 100 times gives
                                     the eager result
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
    # Summed in 64 MiB slices: a uint8 sum accumulates in a whole int64 temporary (8x the
    # tensor), which for the whole tensor would be past the cap this check sets.
    chunk = 64 << 20
    print(f"after_oom_sum={sum(int(again[i:i + chunk].sum().item()) for i in range(0, again.numel(), chunk))}")


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


def trainer(seconds):
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    model = torch.nn.Sequential(*[torch.nn.Linear(4096, 4096) for _ in range(6)]).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    x = torch.randn(2048, 4096, device="cuda")

    def one_step():
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        torch.cuda.synchronize()

    for _ in range(3):  # cuBLAS heuristics and the allocator settle first
        one_step()
    stamps = []
    end = time.time() + seconds
    while time.time() < end:
        one_step()
        stamps.append(time.time())  # wall clock: comparable across the two trainers
    print(f"steps={len(stamps)}")
    print("step_times=" + ",".join(f"{t:.4f}" for t in stamps))


def graph():
    torch.manual_seed(3)
    torch.backends.cuda.matmul.allow_tf32 = False
    model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024)).cuda().eval()
    static_x = torch.randn(256, 1024, device="cuda")
    with torch.no_grad():
        eager = model(static_x).clone()
        side = torch.cuda.Stream()  # warm-up on a side stream, as capture requires
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                model(static_x)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            static_y = model(static_x)
        replays = 0
        for _ in range(100):
            g.replay()
            replays += 1
        torch.cuda.synchronize()
    print(f"replays={replays}")
    print(f"max_abs_diff={(static_y - eager).abs().max().item():.3g}")
    print(f"graph_equal={torch.equal(static_y, eager)}")


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
    elif cmd == "trainer":
        trainer(float(sys.argv[2]))
    elif cmd == "graph":
        graph()
    else:
        sys.exit(f"unknown check {cmd}")
