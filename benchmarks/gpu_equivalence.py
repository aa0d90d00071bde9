"""On a GPU: the explicit backend against cuDNN (float32) and the native CUDA kernels (float64).

python benchmarks/gpu_equivalence.py
"""

import itertools

import torch

from zoo.cores import GRU, LSTM, RNN


def max_error(cls, dtype, bidirectional, num_layers, lengths):
    torch.manual_seed(0)
    kw = dict(num_layers=num_layers, bidirectional=bidirectional)
    fused = cls(16, 32, **kw).to("cuda", dtype)
    explicit = cls(16, 32, backend="explicit", **kw).to("cuda", dtype)
    explicit.load_state_dict(fused.state_dict())
    x = torch.randn(8, 20, 16, device="cuda", dtype=dtype)
    errors = []
    outputs = []
    for core in (fused, explicit):
        core.zero_grad()
        out, _ = core(x, lengths=lengths)
        out.pow(2).sum().backward()
        outputs.append((out.detach(), [p.grad.clone() for p in core.parameters()]))
    (out_f, grads_f), (out_e, grads_e) = outputs
    errors.append((out_f - out_e).abs().max().item())
    errors += [(a - b).abs().max().item() for a, b in zip(grads_f, grads_e)]
    return max(errors)


def main() -> None:
    # cuDNN may use TF32 tensor cores for float32 RNNs (Ampere and later); compare true float32.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    lengths = torch.tensor([20, 3, 11, 20, 1, 7, 19, 5])
    worst = {torch.float64: 0.0, torch.float32: 0.0}
    for cls, dtype, bi, layers, lens in itertools.product(
        (RNN, LSTM, GRU), worst, (False, True), (1, 2), (None, lengths)
    ):
        worst[dtype] = max(worst[dtype], max_error(cls, dtype, bi, layers, lens))
    print(
        f"cudnn {torch.backends.cudnn.version()}: max |explicit - fused| over outputs and "
        f"gradients, every cell x bidirectional x layers x lengths:"
    )
    print(f"  float64 (native CUDA kernels): {worst[torch.float64]:.2e}  (tolerance 1e-5)")
    print(f"  float32 (cuDNN):               {worst[torch.float32]:.2e}  (tolerance 1e-3)")
    assert worst[torch.float64] < 1e-5 and worst[torch.float32] < 1e-3


if __name__ == "__main__":
    main()
