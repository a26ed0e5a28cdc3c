"""DDP correctness of the bilevel step: two gloo processes end with identical nets, and their
gradients equal those of one process on the combined batch (tests/stage5/ddp_bilevel.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


@pytest.mark.ddp
def test_two_rank_bilevel_steps_match_one_process_on_the_combined_batch(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.syspath_prepend(str(HERE))
    import ddp_bilevel

    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    done = subprocess.run([sys.executable, str(HERE / "ddp_bilevel.py"), str(tmp_path / "ddp"), "2"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ddp_bilevel.run(tmp_path / "single", 1)
    finally:
        torch.set_num_threads(threads)
    for option in ddp_bilevel.OPTIONS:
        single = {kind: load_file(str(tmp_path / "single" / f"{option}-rank0-{kind}.safetensors"))
                  for kind in ("grads", "params")}
        ranks = [{kind: load_file(str(tmp_path / "ddp" / f"{option}-rank{r}-{kind}.safetensors"))
                  for kind in ("grads", "params")} for r in (0, 1)]
        assert set(single["grads"]) == set(ranks[0]["grads"]) and any(k.startswith("fusion_net") for k in single["grads"])
        for name, value in ranks[0]["params"].items():
            torch.testing.assert_close(ranks[1]["params"][name], value, atol=0, rtol=0)  # no drift between replicas
            torch.testing.assert_close(value, single["params"][name], atol=1e-6, rtol=1e-5)
        for r in (0, 1):
            for name, grad in single["grads"].items():  # DDP's mean of rank gradients = the combined-batch gradient
                torch.testing.assert_close(ranks[r]["grads"][name], grad, atol=1e-6, rtol=1e-5,
                                           msg=lambda m, name=name, option=option: f"{option} {name}: {m}")
        assert any(float(g.abs().sum()) > 0 for k, g in single["grads"].items() if k.startswith("fusion_net"))
