"""GPU check of the torch families: CUDA is used when present, no_cuda is honoured, weights cross devices."""

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from colearn_learner import ExampleMliFactory
from colearn_learner.data_cli import data_tools
from colearn_learner.weight_adapters import decode_weights, encode_weights

print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))
tools = data_tools()
factory = ExampleMliFactory()
work = Path(tempfile.mkdtemp())
report = {}
for tag, params in (("PYTORCH_XRAY", {}), ("PYTORCH_COVID_XRAY", {})):
    source = tools[tag].fixtures(work / tag / "src", 0)
    folders = tools[tag].split(source, 2, work / tag / "out", 0)
    data = json.dumps({"location": str(folders[0])})
    gpu = factory.get_mli(tag, json.dumps(params), tag, data)
    gpu2 = factory.get_mli(tag, json.dumps(params), tag, json.dumps({"location": str(folders[1])}))
    cpu = factory.get_mli(tag, json.dumps({**params, "no_cuda": True}), tag, data)
    assert gpu._device.type == "cuda" and next(gpu._model.parameters()).is_cuda, "CUDA not used"
    assert cpu._device.type == "cpu" and not next(cpu._model.parameters()).is_cuda, "no_cuda ignored"
    gpu.mli_propose_weights()  # warm-up (cuDNN, allocator)
    cpu.mli_propose_weights()
    t = time.perf_counter()
    proposal = gpu.mli_propose_weights()
    torch.cuda.synchronize()
    gpu_s = time.perf_counter() - t
    t = time.perf_counter()
    cpu.mli_propose_weights()
    cpu_s = time.perf_counter() - t
    assert all(v.device.type == "cpu" for v in proposal.weights.values()), "weights must leave as CPU tensors"
    buffer, _ = encode_weights(proposal)
    received = decode_weights(buffer)
    cpu_verdict = cpu.mli_test_weights(received)  # a CPU learner scores a GPU learner's proposal
    gpu_verdict = gpu2.mli_test_weights(decode_weights(buffer))
    gpu.mli_accept_weights(proposal)
    gpu2.mli_accept_weights(decode_weights(buffer))
    cpu.mli_accept_weights(decode_weights(buffer))
    probe = torch.rand(
        (5, 1, 128, 128) if tag == "PYTORCH_XRAY" else (5, 64), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        out_gpu = gpu.mli_get_current_model().model(probe.cuda()).cpu()
        out_gpu2 = gpu2.mli_get_current_model().model(probe.cuda()).cpu()
        out_cpu = cpu.mli_get_current_model().model(probe).cpu()
    assert torch.equal(out_gpu, out_gpu2), "two GPU learners with the same weights must predict the same"
    max_diff = float((out_gpu - out_cpu).abs().max())
    assert max_diff < 1e-3, max_diff
    # A GPU learner's score is stable: the same weights, the same score.
    again = gpu2.mli_test_weights(decode_weights(buffer))
    assert (again.vote_score, again.test_score) == (gpu_verdict.vote_score, gpu_verdict.test_score)
    report[tag] = {
        "propose_s_gpu_default_steps": round(gpu_s, 4),
        "propose_s_cpu_default_steps": round(cpu_s, 4),
        "cpu_vs_gpu_max_abs_diff": max_diff,
        "cpu_verdict": cpu_verdict.vote_score,
        "gpu_verdict": gpu_verdict.vote_score,
        "weights_bytes": len(buffer),
    }
print(json.dumps(report, indent=1))
print("GPU CHECK OK")
sys.exit(0)
