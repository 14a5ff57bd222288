"""What only a CUDA device can check (marked ``cuda``, skipped without one; ``benchmarks/gpu_check.sh``
runs them): every family's forward and backward on the GPU against the CPU, in float32 and
bfloat16, and a fine-tune in bfloat16 autocast that trains, evaluates, resumes and loads back on the CPU."""
import pytest
import torch

from benchmarks.bench_apply import CONFIGS
from surm_core import load_adapter, load_model, make
from surm_core.finetune import resume, run, weights_digest
from test_finetune import config_for, make_tiny_model, write_topics_csv

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"model": make_tiny_model(root / "model", dropout=0.1), "dataset": write_topics_csv(root / "topics.csv")}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("d_out, d_in", [(64, 64), (96, 40), (33, 77)])
def test_every_family_on_cuda_matches_the_cpu(name, d_out, d_in):
    family, hparams = CONFIGS[name]
    try:
        cpu = make(family, d_out, d_in, init="random", seed=0, **hparams)
    except ValueError:  # e.g. Monarch's 4 blocks need sides divisible by 4
        cpu = make(family, d_out, d_in, init="random", seed=0)
    gpu = make(family, d_out, d_in, init="random", seed=0, **cpu.hparams).cuda()
    x = torch.randn(5, 7, d_in, requires_grad=True)
    xg = x.detach().cuda().requires_grad_(True)
    y, yg = cpu(x), gpu(xg)
    torch.testing.assert_close(yg.cpu(), y, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gpu.to_dense().cpu(), cpu.to_dense(), rtol=1e-4, atol=1e-5)
    g = torch.randn_like(y)
    y.backward(g)
    yg.backward(g.cuda())
    torch.testing.assert_close(xg.grad.cpu(), x.grad, rtol=1e-4, atol=1e-4)
    for (n, p), pg in zip(cpu.named_parameters(), gpu.parameters()):
        torch.testing.assert_close(pg.grad.cpu(), p.grad, rtol=1e-4, atol=1e-4, msg=n)
    # bfloat16 parameters and inputs: finite, and near the float32 result
    half = gpu.to(torch.bfloat16)
    out = half(xg.detach().to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert (out.float().cpu() - y.detach()).abs().max() <= 0.05 * y.detach().abs().max() + 0.05


def test_a_cuda_run_in_bf16_trains_resumes_and_loads_on_the_cpu(tiny, tmp_path):
    settings = dict(steps=12, eval_every=5, device="cuda")
    uninterrupted = run(config_for(tiny, **settings, out_dir=str(tmp_path / "whole")))
    assert uninterrupted["stopped_reason"] == "completed" and uninterrupted["device"].startswith("cuda:")
    assert uninterrupted["config"]["precision"] == "auto" and uninterrupted["final_eval_acc"] > 0.25

    asked = []
    stopped = run(config_for(tiny, **settings, out_dir=str(tmp_path / "run")),
                  should_stop=lambda: asked.append(1) or len(asked) > 7)
    assert stopped["stopped_reason"] == "stopped" and stopped["steps_done"] == 7
    resumed = resume(tmp_path / "run")
    assert resumed["steps_done"] == 12 and resumed["resumed_at"] == [7]
    # CUDA kernels may add in another order from run to run: equal up to rounding, not bit for bit
    assert abs(resumed["final_eval_acc"] - uninterrupted["final_eval_acc"]) <= 0.1

    fresh, _ = load_model(tiny["model"], num_labels=4)
    load_adapter(fresh, tmp_path / "run" / "adapter")
    assert weights_digest(fresh) == resumed["weights_sha256"][0]


def test_cuda_and_cpu_evaluations_agree_in_float32(tiny):
    summaries = [run(config_for(tiny, method="head-only", hparams=None, steps=1, device=device, precision="fp32"))
                 for device in ("cpu", "cuda")]
    assert summaries[0]["final_eval_acc"] == pytest.approx(summaries[1]["final_eval_acc"], abs=1 / 40)
