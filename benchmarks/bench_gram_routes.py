"""The CPU routes of lowrank.gram against torch's on one Gram problem: a 2048 x 5632 float64 matrix (TinyLlama's
MLP shape), its 2048 x 2048 Gram matrix, and the eigenproblems a full delta with base metrics needs (all values;
all vectors; all values with the top 64 vectors; the top 10 vectors). Best of 3, this machine's threads. Prints a table.

    python benchmarks/bench_gram_routes.py
"""

import time

import numpy as np
import scipy.linalg
import torch

from lowrank.gram import _eigen, _gram


def best(run, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    X = torch.randn(2048, 5632, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    G_full = X @ X.T
    G_lower = _gram(X, torch.float64)
    rows = [("Gram X X^T", best(lambda: X @ X.T), best(lambda: _gram(X, torch.float64))),
            ("all eigenvalues", best(lambda: torch.linalg.eigvalsh(G_full)), best(lambda: _eigen(G_lower, 0))),
            ("all eigenvectors", best(lambda: torch.linalg.eigh(G_full)), best(lambda: _eigen(G_lower, 2048))),
            ("all values, top 64", best(lambda: torch.linalg.eigh(G_full)), best(lambda: _eigen(G_lower, 64))),
            ("top 10 eigenvectors", best(lambda: torch.linalg.eigh(G_full)),
             best(lambda: _eigen(G_lower, 10, values=False)))]
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), scipy {scipy.__version__}, "
          f"numpy {np.__version__}")
    print(f"{'step':<22}{'torch (s)':>12}{'lowrank.gram (s)':>18}{'ratio':>8}")
    for name, before, after in rows:
        print(f"{name:<22}{before:>12.3f}{after:>18.3f}{before / after:>7.2f}x")
    top = _eigen(G_lower, 10, values=False)[1]
    reference = torch.linalg.eigh(G_full)[1][:, -10:].flip(1)
    print(f"top-10 vectors agree to {float((top.T @ reference).abs().diagonal().sub(1).abs().max()):.1e}")


if __name__ == "__main__":
    main()
