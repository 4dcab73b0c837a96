"""Canary exposure before/after unlearning a char-LSTM (Warnecke et al., NDSS 2023, Sec. 6.2).

Usage: python benchmarks/canary.py [--quick]   (writes results/canary/canary.{json,md})
"""

import sys

import torch

from oblivio.bench.canary import CanarySettings, format_table, run_canary, save_report

if __name__ == "__main__":
    torch.set_num_threads(1)
    settings = CanarySettings.quick() if "--quick" in sys.argv else CanarySettings()
    report = run_canary(settings, progress=lambda message: print(message, flush=True))
    print(format_table(report))
    print("written to", save_report(report, "results/canary"))
