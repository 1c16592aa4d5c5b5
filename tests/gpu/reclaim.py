"""SIGKILL reclaim: starts a client that holds memory under a broker, kills it with
SIGKILL once it holds it, and times how long until it is gone from the broker's
ledger (gpushare-smi --json) and until the GPU's used memory drops (nvidia-smi on a
real GPU; NVML through ctypes on simgpu, which has no nvidia-smi). Prints KEY=VALUE.

  reclaim.py --smi GPUSHARE_SMI --socket SOCK [--nvml] -- CMD...   (CMD prints allocated_bytes=)
"""
import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time


def used_mib_nvidia_smi():
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                         capture_output=True, text=True, timeout=10).stdout
    return float(out.split()[0])


class Nvml:
    class Memory(ctypes.Structure):
        _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

    def __init__(self):
        self.lib = ctypes.CDLL("libnvidia-ml.so.1")
        if self.lib.nvmlInit_v2() != 0:
            raise RuntimeError("nvmlInit_v2 failed")
        self.handle = ctypes.c_void_p()
        if self.lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(self.handle)) != 0:
            raise RuntimeError("nvmlDeviceGetHandleByIndex_v2(0) failed")

    def used_mib(self):
        m = Nvml.Memory()
        if self.lib.nvmlDeviceGetMemoryInfo(self.handle, ctypes.byref(m)) != 0:
            raise RuntimeError("nvmlDeviceGetMemoryInfo failed")
        return m.used / (1 << 20)


def in_ledger(smi, socket, pid):
    out = subprocess.run([smi, "--socket", socket, "--json"], capture_output=True, text=True, timeout=10).stdout
    return any(c.get("pid") == pid for c in json.loads(out)["clients"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smi", required=True)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--nvml", action="store_true", help="read used memory through NVML (simgpu)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    used_mib = Nvml().used_mib if args.nvml else used_mib_nvidia_smi

    client = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    held = None
    for line in client.stdout:
        print("client: " + line.rstrip())
        if line.startswith("allocated_bytes="):
            held = int(line.split("=", 1)[1])
            break
    if held is None:
        sys.exit("the client ended before it held its memory")
    deadline = time.monotonic() + 10
    while not in_ledger(args.smi, args.socket, client.pid):
        if time.monotonic() > deadline:
            sys.exit("the client never showed in the broker's ledger")
        time.sleep(0.01)
    before = used_mib()
    print(f"held_bytes={held}")
    print(f"used_before_mib={before:.0f}")

    killed = time.monotonic()
    os.kill(client.pid, signal.SIGKILL)
    ledger_ms = gpu_ms = None
    after = before
    while time.monotonic() - killed < 5 and (ledger_ms is None or gpu_ms is None):
        if ledger_ms is None and not in_ledger(args.smi, args.socket, client.pid):
            ledger_ms = (time.monotonic() - killed) * 1e3
        if gpu_ms is None:
            after = used_mib()
            if before - after >= 0.9 * held / (1 << 20):
                gpu_ms = (time.monotonic() - killed) * 1e3
    client.wait()
    print(f"used_after_mib={after:.0f}")
    print(f"ledger_ms={ledger_ms:.1f}" if ledger_ms is not None else "ledger_ms=never")
    print(f"gpu_ms={gpu_ms:.1f}" if gpu_ms is not None else "gpu_ms=never")


if __name__ == "__main__":
    main()
