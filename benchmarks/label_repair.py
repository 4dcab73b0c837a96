"""Repairing flipped labels in a CNN (Warnecke et al., NDSS 2023, Sec. 6.3).

Usage: python benchmarks/label_repair.py [--quick]   (writes results/poison-repair/...)
"""

import sys

import torch

from oblivio.bench.poison import PoisonSettings, format_table, run_poison_repair, save_report

if __name__ == "__main__":
    torch.set_num_threads(1)
    settings = PoisonSettings.quick() if "--quick" in sys.argv else PoisonSettings()
    report = run_poison_repair(settings, progress=lambda message: print(message, flush=True))
    print(format_table(report))
    print("written to", save_report(report, "results/poison-repair"))
