"""capsafe's CPU speed-ups for decoding, each against what it replaces: the compiled decoding attention
(``backends/native.py``) against softmax attention in float64, in its vector and portable code and in
a build without AVX-512; a machine that cannot build it decodes without it; the packed linear
weights (``backends/packing.py``) give the same outputs bit for bit, and leave the model as it was."""

import logging
import os

import pytest

from capsafe_core.backends import Decoding, chat

pytestmark = pytest.mark.skipif(os.environ.get("CAPSAFE_NATIVE") == "0", reason="CAPSAFE_NATIVE=0")


def reference(q, k, v, valid, scale):
    """Softmax attention in float64: q (rows, heads, queries, dim), k/v (rows, kv heads, positions, dim),
    valid (rows, queries, positions); (rows, queries, heads, dim)."""
    import torch

    group = q.shape[1] // k.shape[1]
    k = k.double().repeat_interleave(group, dim=1)
    v = v.double().repeat_interleave(group, dim=1)
    scores = torch.einsum("rhqd,rhld->rhql", q.double(), k) * scale
    scores = scores.masked_fill(~valid[:, None], float("-inf"))
    return torch.einsum("rhql,rhld->rqhd", torch.softmax(scores, -1), v)


def inputs(dtype, dim, group, *, queries=1, rows=6, kv=2, positions=41, seed=0):
    """Queries as transformers lays them out (heads and queries transposed), keys and values in a buffer
    with room to spare (rows not contiguous), a causal mask with left padding, unwritten positions, a
    gap and a row attending to a single position."""
    import torch

    g = torch.Generator().manual_seed(seed)
    q = torch.randn(rows, queries, kv * group, dim, generator=g).to(dtype).transpose(1, 2)
    buffer = torch.randn(2 * rows, kv, positions + 7, dim, generator=g).to(dtype)
    k, v = buffer[::2, :, :positions], buffer[1::2, :, :positions]
    valid = torch.ones(queries, positions, dtype=torch.bool).tril(positions - queries).repeat(rows, 1, 1)
    valid[1, :, :9] = False  # left padding
    valid[2, :, 30:] = False  # not written yet
    valid[3, :, 3:17] = False  # padding between a shared prefix and the row's own tokens
    valid[4, :, 1:] = False  # one position
    return q, k, v, valid


@pytest.mark.parametrize("dim", [8, 64, 128])
@pytest.mark.parametrize("group", [1, 3])
@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
@pytest.mark.parametrize("queries", [1, 5])
def test_compiled_attention_equals_softmax_attention(dim, group, dtype_name, queries):
    import torch

    from capsafe_core.backends import native

    ext = native.kernel()
    assert ext is not None, "the kernel must build on this machine (a C++ compiler and ninja)"
    dtype = getattr(torch, dtype_name)
    q, k, v, valid = inputs(dtype, dim, group, queries=queries)
    want = reference(q, k, v, valid, 0.3)
    tol = 2e-6 if dtype == torch.float32 else 2e-2
    for generic in (False, True):
        got = ext.attention(q, k, v, valid, 0.3, generic)
        assert got.dtype == dtype and got.shape == (q.shape[0], queries, q.shape[1], dim)
        assert torch.allclose(got.double(), want, atol=tol, rtol=tol), (generic, (got.double() - want).abs().max())


@pytest.mark.parametrize("queries", [1, 40])
@pytest.mark.parametrize("masked", [True, False])
def test_attention_uses_the_kernel_and_matches_the_products(monkeypatch, queries, masked):
    """A decoding step (``_one_query``) and a prompt (``_prompts``, causal or by mask) through the kernel
    equal the products they replace (fp32)."""
    import torch

    from capsafe_core.backends import attention, native

    q, k, v, valid = inputs(torch.float32, 64, 3, queries=queries)
    mask = valid[:, None] if masked else None
    run = attention._one_query if queries == 1 else attention._prompts
    args = {} if queries == 1 else {"causal": True}
    calls = []
    ext = native.kernel()
    monkeypatch.setattr(native, "kernel", lambda: calls.append(1) or ext)
    got = run(q, k, v, mask, 0.3, **args)
    monkeypatch.setattr(native, "kernel", lambda: None)
    products = run(q, k, v, mask, 0.3, **args)
    attends = valid.any(-1) if masked else torch.ones(valid.shape[:2], dtype=torch.bool)
    assert calls and got.shape == products.shape and torch.allclose(got[attends], products[attends], atol=1e-5)
    assert (got[~attends] == 0).all()  # a padding query attends to nothing: zeros, where the products average
    if masked:  # additive masks go to the products
        additive = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
        assert not attention._compiled_takes(q, k, v, additive)


def test_portable_build_without_avx512():
    """The code for CPUs without AVX-512 compiles and computes the same."""
    import platform

    import torch

    from capsafe_core.backends import native

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("an x86 flag")
    ext = native.kernel(("-O3", "-march=native", "-mno-avx512f", "-ffast-math", "-fopenmp"))
    assert ext is not None
    q, k, v, valid = inputs(torch.bfloat16, 64, 3, queries=3)
    got = ext.attention(q, k, v, valid, 0.3, False)
    assert torch.allclose(got.double(), reference(q, k, v, valid, 0.3), atol=2e-2)


def test_without_a_compiler_decoding_goes_on(tmp_path, monkeypatch, caplog):
    import torch

    from capsafe_core.backends import attention, native

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    flags = ("-O1", "-fopenmp")  # a build not made before
    with caplog.at_level(logging.WARNING):
        assert native.kernel(flags) is None
        assert native.kernel(flags) is None  # tried once
    warned = [r for r in caplog.records if "could not be built" in r.getMessage()]
    assert len(warned) == 1 and "CAPSAFE_NATIVE=0" in warned[0].getMessage()
    build = native.kernel
    monkeypatch.setattr(native, "kernel", lambda: build(flags))
    q, k, v, valid = inputs(torch.float32, 8, 3)
    out = attention._one_query(q, k, v, valid[:, None], 0.3)
    assert torch.allclose(out.double(), reference(q, k, v, valid, 0.3), atol=1e-5)


def test_turned_off(monkeypatch):
    from capsafe_core.backends import native

    monkeypatch.setenv("CAPSAFE_NATIVE", "0")
    assert native.kernel() is None


def test_build_name_differs_by_flags_and_cpu(monkeypatch):
    from capsafe_core.backends import native

    a = native.build_name()
    assert a == native.build_name() and a != native.build_name(("-O2",))
    monkeypatch.setattr(native, "_cpu", lambda: "another cpu")
    assert native.build_name() != a


def test_packed_linear_layers_give_the_same_outputs_and_are_restored():
    import torch

    from capsafe_core.backends import packing

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(576, 1536), torch.nn.SiLU(), torch.nn.Linear(1536, 16, bias=False))
    model = model.to(torch.bfloat16)
    wrapped = torch.nn.Linear(16, 16).to(torch.bfloat16)
    wrapped.forward = wrapped.forward  # someone else's wrapper (an instance attribute): left alone
    model.append(wrapped)
    x = torch.randn(3, 7, 576).to(torch.bfloat16)
    assert not packing.available(model)  # gradients on
    with torch.inference_mode():
        if not packing.available(model):
            pytest.skip("oneDNN bfloat16 is not available on this CPU")
    with torch.inference_mode():
        plain = model(x)
        with packing.packed(model, rows=21) as n:
            assert n == 2
            packed = model(x)
            assert "forward" in model[0].__dict__
        assert all("forward" not in m.__dict__ for m in model[:3])
        assert torch.equal(packed, plain)
        assert torch.equal(model(x), plain)
    with packing.packed(model) as n:  # gradients on: nothing packed
        assert n == 0
    with torch.inference_mode(), packing.packed(model.float()) as n:  # float32: MKL, left alone
        assert n == 0


def test_bf16_decoding_identical_with_and_without_packing(tiny_model, monkeypatch):
    import torch

    from capsafe_core.backends import packing
    from capsafe_core.backends.hf import TransformersBackend

    backend = TransformersBackend(str(tiny_model), dtype="bfloat16", device="cpu", batch_size=8)
    prompts = [chat(p) for p in ("Write a guide", "hi", "What is two plus two, exactly?" * 3)]
    with torch.inference_mode():
        assert packing.available(backend.model)
    packed = backend.generate(prompts, Decoding(max_new_tokens=12))
    monkeypatch.setattr(packing, "available", lambda model: False)
    plain = backend.generate(prompts, Decoding(max_new_tokens=12))
    assert [c.text for c in packed] == [c.text for c in plain]
    backend.close()


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_compiled_rms_norm_matches_transformers(dtype_name):
    import torch
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from capsafe_core.backends import native

    dtype = getattr(torch, dtype_name)
    norm = LlamaRMSNorm(576, eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(576) + 0.5)
    tol = 2 * torch.finfo(dtype).eps if dtype == torch.bfloat16 else 1e-5
    for shape in ((128, 1, 576), (3, 50, 576), (576,), (0, 576)):
        x = (torch.randn(shape) * 4).to(dtype)
        want, got = norm(x), native.kernel().rms_norm(x, norm.weight, 1e-5)
        assert got.shape == want.shape and got.dtype == dtype
        assert torch.allclose(got.float(), want.float(), rtol=tol, atol=tol)
        if x.numel() and dtype == torch.bfloat16:
            assert (got == want).float().mean() > 0.99  # the same arithmetic: nearly all values identical


def test_norms_switch_only_layers_that_match():
    import torch
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from capsafe_core.backends import norms

    model = torch.nn.ModuleList([LlamaRMSNorm(64), GemmaRMSNorm(64), LlamaRMSNorm(64)])  # Gemma's: x * (1 + w)
    model = model.to(torch.bfloat16)
    model[2].forward = model[2].forward  # wrapped by someone else
    x = torch.randn(2, 5, 64).to(torch.bfloat16)
    with torch.inference_mode():
        want = [m(x) for m in model]
        with norms.compiled(model) as n:
            assert n == 1 and "forward" in model[0].__dict__
            got = [m(x) for m in model]
            assert torch.equal(model[0](x.float()), LlamaRMSNorm.forward(model[0], x.float()))  # other dtype
        assert "forward" not in model[0].__dict__ and "forward" not in model[1].__dict__
    assert all(torch.allclose(a.float(), b.float(), rtol=2e-2, atol=2e-2) for a, b in zip(got, want, strict=True))
    with norms.compiled(model) as n:  # gradients on: nothing switched
        assert n == 0
    with torch.inference_mode(), norms.compiled(model.float()) as n:  # float32: left alone
        assert n == 0


def test_no_packing_without_memory_to_spare(monkeypatch):
    import torch

    from capsafe_core.backends import packing

    model = torch.nn.Sequential(torch.nn.Linear(64, 64)).to(torch.bfloat16)
    monkeypatch.setattr(packing, "free_memory", lambda device: 64 * 64 * 2 * 3)  # copies would take a third
    with torch.inference_mode():
        if not packing.available(model):
            pytest.skip("oneDNN bfloat16 is not available on this CPU")
        with packing.packed(model) as n:
            assert n == 0
        monkeypatch.setattr(packing, "free_memory", lambda device: 64 * 64 * 2 * 5)
        with packing.packed(model) as n:
            assert n == 1


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_compiled_argmax_equals_torch(dtype_name):
    """Greedy decoding's argmax: the first maximum, ties, NaN (first NaN wins, as in torch), -inf rows,
    widths not a multiple of the vector's, rows of a wider tensor."""
    import torch

    from capsafe_core.backends import native

    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(0)
    for width in (1, 7, 16, 33, 49152):
        x = torch.randn(9, width + 3, generator=g).to(dtype)[:, :width]
        x[1] = 2.0  # all tied
        x[2, width // 2] = float("nan")
        x[3] = float("-inf")
        x[4, -1] = 1e4  # the maximum last (in the tail past the vectors)
        x[5, -1] = float("nan")
        x[6, 0] = float("nan")
        x[7, : width // 3] = 50.0  # ties at the start
        got = native.kernel().argmax(x)
        assert torch.equal(got, x.float().argmax(-1)), (width, got, x.float().argmax(-1))


def test_a_fresh_build_finds_pips_ninja(tmp_path):
    """On a fresh machine, with the virtual environment not activated (``make test`` runs ``.venv/bin/pytest``)
    and no system ninja, the build uses the ninja pip installed."""
    import subprocess
    import sys
    from pathlib import Path

    tools = tmp_path / "bin"
    tools.mkdir()
    here = Path(sys.executable).parent.resolve()
    for folder in map(Path, os.environ.get("PATH", "").split(os.pathsep)):
        if not folder.is_dir() or folder.resolve() == here:
            continue
        for tool in folder.iterdir():
            if tool.name != "ninja" and not (tools / tool.name).exists():
                (tools / tool.name).symlink_to(tool)
    env = {
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PATH": str(tools),
        "TORCH_EXTENSIONS_DIR": str(tmp_path / "x"),
    }
    code = "from capsafe_core.backends import native; print(native.kernel() is not None)"
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=900)
    assert out.stdout.strip() == "True", out.stderr[-2000:]
