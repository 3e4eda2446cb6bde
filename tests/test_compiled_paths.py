"""Each compiled pass of the fleet model (radix argsort, Che's per-key passes, IPsec's re-key and SA
pair passes, PSP's rotation loop, the TLS re-key schedule, the NIC engine shares) gives the bytes of
its numpy version, end to end: every column of ``run_one``'s tables for variants and settings that go
through them, the compiled modules on and off (the workload drawn again in each).  (The command
queues and the ledger stay compiled in both: the numpy FIFO is exact only to about a nanosecond
(``tests/test_commands.py``), and the numpy ledger sums per-host loads in another order
(``tests/test_traffic.py``, ``tests/test_aggregates.py``).)"""

from __future__ import annotations

import pandas as pd
import pytest

from pspsim.model import _kernels, cache, control, dataplane, ipsec_control, psp_control, sorting, tls_control
from pspsim.study.runner import forget_workload, resolve_parameters, run_one
from tests.sim_helpers import scenario

pytestmark = pytest.mark.skipif(sorting._sort is None or cache._che is None, reason="compiled modules not built")

CASES = [
    ("ipsec-packet-offload", {"keys": {"ipsec_child_rekey": "7min", "ipsec_ike_rekey": "13min"}}),
    ("ipsec-crypto-offload", {"keys": {"ipsec_sa_granularity": "connection", "ipsec_child_rekey": "9min"}}),
    ("ktls-offload", {}),
    ("psp", {"keys": {"psp_rotation_period": "10min", "psp_rekey_delay": "30s", "psp_rekey_spread": "2min"}}),
    ("psp", {"keys": {"psp_rotation_period": "4min", "psp_rekey_delay": "10s", "psp_rekey_spread": "5min",
                      "psp_rekey": "in-place"}}),  # rotation faster than re-key: stale checks, stale-notice reconnects
]

IDS = ["ipsec-packet-offload", "ipsec-crypto-offload-per-connection", "ktls-offload", "psp", "psp-in-place-fast"]


def _tables(variant: str, sections: dict, overrides: dict) -> tuple[pd.DataFrame, dict]:
    sc = scenario(run={"duration": "40min"},
                  workload={"connections_per_host": {"kind": "fixed", "mean": 900}, "peers_per_host": 5},
                  **sections)
    params = resolve_parameters(sc).with_overrides(overrides)
    forget_workload()  # drawn again, with the sorts of this leg
    out = run_one(sc, params, 0, variant)
    summary = {k: v for k, v in out.summary.items() if k != "wall_time_s"}
    return out.timeseries, summary


@pytest.mark.parametrize("variant,sections", CASES, ids=IDS)
def test_compiled_passes_give_the_numpy_tables(variant, sections, monkeypatch):
    overrides = {"nic.ipsec_sa_capacity": 12, "nic.ipsec_sa_cache_entries": 4,  # table full, caches spill
                 "nic.ktls_context_cache_entries": 300, "nic.psp_tx_key_cache_entries": 300}
    fast = _tables(variant, sections, overrides)
    with monkeypatch.context() as m:
        m.setattr(sorting, "_sort", None)
        m.setattr(cache, "_che", None)
        m.setattr(ipsec_control, "_schedules", None)
        m.setattr(psp_control, "_schedules", None)
        m.setattr(tls_control, "_schedules", None)
        m.setattr(dataplane, "_kernels", None)
        m.setattr(control, "_queues", None)  # fits_on_both: the slot ranks in numpy
        slow = _tables(variant, sections, overrides)
    pd.testing.assert_frame_equal(fast[0], slow[0], check_exact=True)
    assert fast[1] == slow[1]
    assert _kernels is not None
