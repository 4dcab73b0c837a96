"""The pass over X split by row blocks on a real distributed.LocalCluster (2 processes)."""

import numpy as np
import pytest

from oblivio.unlearners._passes import DaskRowPass, fused_pass

distributed = pytest.importorskip("distributed")


@pytest.mark.slow
def test_row_block_pass_on_two_worker_processes_equals_the_serial_pass():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5000, 64)).astype(np.float32)
    s = rng.standard_normal((3, 64))
    w = rng.random((5000, 3))
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        split = DaskRowPass(client, X)
        assert len(split.ranges) == 2
        # each worker holds one contiguous range of rows
        assert len({next(iter(client.who_has(c)[c.key])) for c in split.chunks}) == 2
        A, G = split(s, w)
    A_ref, G_ref = fused_pass(X, s, w)
    assert np.array_equal(A, A_ref)  # same float32 products, row by row
    assert np.allclose(G, G_ref, rtol=1e-6, atol=1e-9)  # partial sums added in another order
    exact = (X.astype(np.float64).T @ (w * (X.astype(np.float64) @ s.T))).T
    assert np.allclose(G, exact, rtol=1e-3)
