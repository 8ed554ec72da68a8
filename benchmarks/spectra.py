"""Benchmark: exact delta spectra (QR route) against the dense paths, scan throughput, peak memory.

Prints, from one run, ratios against anchors measured in the same run:

1. time per module of the QR route vs a dense float64 ARPACK ``scipy.sparse.linalg.svds`` of ΔW
   (WeightWatcher's path for LoRA) vs dense ``torch.linalg.svdvals`` of ΔW, on real adapters'
   modules and on Llama-8B-shaped modules (r = 16; 4096×4096 and 14336×4096);
2. the scan's MB/s (list + diff + audit + write, one process) against a plain read of the same
   safetensors bytes, cold (pages evicted with posix_fadvise), and the "floor": read + sha256 +
   the float64 Gram product of every 2-D LoRA factor, nothing else, on every CPU (the least work
   of any exact scan with this hash and this BLAS; conv and embedding factors are left out of it,
   so it errs on the fast side);
3. peak RSS of a scan of one large synthetic adapter (Llama-8B shapes, every projection, r = 16)
   against 2 × the file size + the interpreter baseline.

Usage: python benchmarks/spectra.py [--registry ../shared/realworld] [--quick]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def timeit(fn, repeat: int, warmup: bool = True) -> float:
    if warmup:
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def qr_route(modules):
    """The product's path: every module of an adapter through one ``delta_spectra`` call."""
    from audit.spectra import delta_spectra

    return delta_spectra([(A, B, 2.0) for A, B in modules])


def gram_floor(modules):
    """Returns a callable doing only the float64 Gram products ``A Aᵀ`` and ``BᵀB`` of every module
    (factors upcast beforehand, outside the timing): work that every exact route must do, so
    ARPACK's time over this one bounds the ratio any QR or Gram route can reach."""
    a64 = [(A.double().numpy(), B.double().numpy()) for A, B in modules]

    def run():
        for a, b in a64:
            _ = a @ a.T
            _ = b.T @ b
    return run


def arpack_route(A, B, s):
    from scipy.sparse.linalg import svds

    dw = (s * (B.double() @ A.double())).numpy()
    k = min(A.shape[0], min(dw.shape) - 1)
    return np.sort(svds(dw, k=k, return_singular_vectors=False, random_state=0))[::-1]


def dense_route(A, B, s):
    return torch.linalg.svdvals(s * (B.double() @ A.double()))


def real_adapters(registry: Path, limit: int) -> list[tuple[str, list[tuple[torch.Tensor, torch.Tensor]]]]:
    """The ``limit`` adapters with the largest modules: every 2-D LoRA pair of each."""
    from safetensors import safe_open

    out = []
    for f in sorted(glob.glob(str(registry / "*" / "adapter_model.safetensors"))):
        with safe_open(f, "pt") as h:
            pairs = []
            for k in h.keys():
                if k.endswith("lora_A.weight"):
                    A, B = h.get_tensor(k), h.get_tensor(k.replace("lora_A", "lora_B"))
                    if A.dim() == 2 and B.dim() == 2 and A.shape[0] == B.shape[1]:
                        pairs.append((A, B))
            if pairs:
                out.append((Path(f).parent.name[:32], pairs))
    out.sort(key=lambda t: -t[1][0][1].shape[0] * t[1][0][0].shape[1])
    return out[:limit]


def section_modules(registry: Path | None, quick: bool) -> None:
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    limits = threadpool_limits(1)   # numpy/scipy BLAS (ARPACK's mat-vecs, the Gram products) on one thread too
    print("## 1. time per module: QR route vs dense paths (1 thread, median)")
    print("QR route: all of an adapter's modules through one delta_spectra call, divided by their number;")
    print("ARPACK: mean over up to 4 modules spread over the adapter; dense: its first module (shape shown);")
    print("Gram: only the float64 Gram products of both factors (what every exact route computes), so")
    print("ARPACK/Gram is the most any exact route could reach on these modules")
    print(f"{'adapter / modules':34} {'n':>4} {'shape':>14} {'r':>3} {'QR route':>10} {'Gram':>9} {'ARPACK':>10} "
          f"{'dense':>10} {'ARPACK/QR':>10} {'ARPACK/Gram':>12} {'dense/QR':>9}")
    cases = []
    g = torch.Generator().manual_seed(0)
    if registry is not None:
        cases += real_adapters(registry, 4 if quick else 8)
    n_llama = 4 if quick else 32
    cases.append(("llama-8B q_proj r=16 (32 layers)",
                  [(torch.randn(16, 4096, generator=g) * 0.01, torch.randn(4096, 16, generator=g) * 0.01)
                   for _ in range(n_llama)]))
    if not quick:
        cases.append(("llama-8B up_proj r=16 (32 layers)",
                      [(torch.randn(16, 4096, generator=g) * 0.01, torch.randn(14336, 16, generator=g) * 0.01)
                       for _ in range(n_llama)]))
    ratios, ceilings = [], []
    for name, modules in cases:
        A, B = modules[0]
        big = B.shape[0] * A.shape[1] > 2e7
        t_qr = timeit(lambda: qr_route(modules), 5 if big else 20) / len(modules)
        t_gram = timeit(gram_floor(modules), 5 if big else 20) / len(modules)
        sample = modules[:: max(1, len(modules) // 4)][:4]   # spread over the adapter's shapes
        t_ar = statistics.mean(timeit(lambda a=a, b=b: arpack_route(a, b, 2.0), 1, warmup=not big)
                               for a, b in (sample[:1] if big else sample))
        t_de = timeit(lambda: dense_route(A, B, 2.0), 1 if big else 2, warmup=not big)
        ref = qr_route(modules)[0]
        err = float(np.max(np.abs(arpack_route(A, B, 2.0)[: ref.numel()] - ref.numpy())) / float(ref[0]))
        ratios.append(t_ar / t_qr)
        ceilings.append(t_ar / t_gram)
        print(f"{name:34} {len(modules):4d} {str(tuple(B.shape[:1]) + tuple(A.shape[1:])):>14} {A.shape[0]:3d} "
              f"{t_qr*1e3:9.3f}ms {t_gram*1e3:8.3f}ms {t_ar*1e3:9.1f}ms {t_de*1e3:9.1f}ms {t_ar/t_qr:9.0f}x "
              f"{t_ar/t_gram:11.0f}x {t_de/t_qr:8.0f}x   (ARPACK rel. err {err:.1e})")
    print(f"ARPACK/QR: min {min(ratios):.0f}x, median {statistics.median(ratios):.0f}x (target >= 500x); "
          f"ARPACK/Gram (the ceiling): min {min(ceilings):.0f}x, median {statistics.median(ceilings):.0f}x\n")
    limits.restore_original_limits()
    torch.set_num_threads(threads)


def _weights(registry: Path) -> list[str]:
    return sorted(glob.glob(str(registry / "**" / "adapter_model.safetensors"), recursive=True))


def _evict(files: list[str]) -> None:
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)   # dirty pages (a file just written) are not dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _plain_read(files: list[str]) -> float:
    t = time.perf_counter()
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(8 * 2**20):
                pass
    return time.perf_counter() - t


def _scan_once(registry: Path) -> float:
    from audit.pipeline.scan import scan
    from audit.registry import LocalRegistry
    from audit.store import ParquetStore

    with tempfile.TemporaryDirectory() as tmp:
        store = ParquetStore(Path(tmp) / "store")
        t = time.perf_counter()
        scan(LocalRegistry(registry, hash_cache=None), store)
        return time.perf_counter() - t


def _floor_one(path: str, content_hash: bool = True) -> None:
    """The least work of any exact scan of one file: read and hash every byte (unless
    ``content_hash`` is false), upcast every 2-D ``lora_A``/``lora_B`` factor to float64 and form
    its Gram product (each element enters r products on every exact route: CholeskyQR, Householder
    QR or a Gram eigensolver); no pairing, no spectra, no output."""
    import hashlib

    from audit.adapter.weights import SafeWeights
    from audit.limits import DEFAULT_LIMITS
    from audit.spectra.delta import _float_array

    if content_hash:
        with open(path, "rb") as fh:
            hashlib.file_digest(fh, "sha256")
    with SafeWeights(Path(path), DEFAULT_LIMITS) as w:
        for name, info in w.tensors.items():
            if len(info.shape) != 2 or not ("lora_A" in name or "lora_B" in name):
                continue
            x = _float_array(w.read(name)).astype(np.float64)
            _ = x @ x.T if "lora_A" in name else x.T @ x


def _floor(files: list[str], threads: int, content_hash: bool = True) -> float:
    """Seconds of :func:`_floor_one` over ``files`` on ``threads`` threads, largest files first."""
    from concurrent.futures import ThreadPoolExecutor

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda f: _floor_one(f, content_hash), sorted(files, key=os.path.getsize, reverse=True)))
    return time.perf_counter() - t


def _cold(fn, files: list[str]) -> float:
    """Best of two runs of ``fn`` with the files' pages evicted before each."""
    times = []
    for _ in range(2):
        _evict(files)
        times.append(fn())
    return min(times)


def section_throughput(registries: list[tuple[str, Path]]) -> None:
    from threadpoolctl import threadpool_limits

    cpus = os.cpu_count() or 1
    print("## 2. scan throughput (list + diff + audit + write, one process as `scan --in-process` runs it;")
    print("##    hashing on a thread per CPU, BLAS with its default threads) vs a plain read of the same bytes;")
    print("##    'floor': read + sha256 + float64 Gram product of every LoRA factor and nothing else, files")
    print(f"##    spread over {cpus} threads, BLAS on one thread each: the least work of an exact scan")
    print("##    with this hash and this BLAS; 'Gram only': the same without the content hash")
    import audit.adapter.config  # noqa: F401 - import peft once, outside the timings
    from audit.adapter.config import parse_adapter_config

    parse_adapter_config(b'{"peft_type": "LORA"}', max_bytes=100)
    print(f"{'registry':34} {'files':>5} {'MB':>7} {'read':>9} {'scan':>9} {'ratio':>6} {'floor':>9} {'ratio':>6}"
          f" {'Gram only':>9} {'ratio':>6}   (cold: pages evicted before each run)")
    for label, registry in registries:
        files = _weights(registry)
        mb = sum(os.path.getsize(f) for f in files) / 1e6
        _scan_once(registry)
        read = _cold(lambda: _plain_read(files), files)
        scan = _cold(lambda: _scan_once(registry), files)
        with threadpool_limits(1):
            floor = _cold(lambda: _floor(files, cpus), files)
            gram = _cold(lambda: _floor(files, cpus, content_hash=False), files)
        print(f"{label:34} {len(files):5d} {mb:7.1f} {mb/read:5.0f}MB/s {mb/scan:5.0f}MB/s {read/scan*100:5.1f}% "
              f"{mb/floor:5.0f}MB/s {read/floor*100:5.1f}% {mb/gram:5.0f}MB/s {read/gram*100:5.1f}%")
    print("target: scan >= 70% of the cold plain read (the floor bounds what any exact scan can reach)\n")


RSS_CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(1)
import audit.adapter.config, audit.adapter_audit, audit.store, audit.registry, audit.pipeline.scan
from audit.adapter.config import parse_adapter_config
parse_adapter_config(b'{"peft_type": "LORA"}', max_bytes=100)
import io, pyarrow as pa, pyarrow.parquet as pq
pq.write_table(pa.table({"x": [1]}), io.BytesIO())   # first Parquet write imports pandas: not the scan's cost

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

with open("/proc/self/clear_refs", "w") as fh:   # reset the peak (VmHWM) to the current RSS
    fh.write("5")
base = status("VmRSS:")
from audit.pipeline.scan import scan
from audit.registry import LocalRegistry
from audit.store import ParquetStore
t = time.perf_counter()
scan(LocalRegistry(sys.argv[1], hash_cache=None), ParquetStore(sys.argv[2]))
dt = time.perf_counter() - t
print(json.dumps({"baseline": base, "peak": status("VmHWM:"), "seconds": dt}))
"""


def _llama8b_adapter(folder: Path, r: int = 16, layers: int = 32) -> int:
    from safetensors.torch import save_file

    shapes = {"self_attn.q_proj": (4096, 4096), "self_attn.k_proj": (1024, 4096),
              "self_attn.v_proj": (1024, 4096), "self_attn.o_proj": (4096, 4096),
              "mlp.gate_proj": (14336, 4096), "mlp.up_proj": (14336, 4096), "mlp.down_proj": (4096, 14336)}
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(layers):
        for name, (d_out, d_in) in shapes.items():
            key = f"base_model.model.model.layers.{i}.{name}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(r, d_in, generator=g) * 0.01
            tensors[f"{key}.lora_B.weight"] = torch.randn(d_out, r, generator=g) * 0.01
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": 32, "base_model_name_or_path": "meta-llama/Llama-3.1-8B",
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}))
    return (folder / "adapter_model.safetensors").stat().st_size


HUB_SHAPED = {
    # name: (base model, layers, {module: (d_out, d_in)}, r, dtype)
    "llama-3.1-8b-r16-all-bf16": ("meta-llama/Llama-3.1-8B", 32, {
        "self_attn.q_proj": (4096, 4096), "self_attn.k_proj": (1024, 4096), "self_attn.v_proj": (1024, 4096),
        "self_attn.o_proj": (4096, 4096), "mlp.gate_proj": (14336, 4096), "mlp.up_proj": (14336, 4096),
        "mlp.down_proj": (4096, 14336)}, 16, torch.bfloat16),
    "qwen2.5-7b-r64-attn-bf16": ("Qwen/Qwen2.5-7B", 28, {
        "self_attn.q_proj": (3584, 3584), "self_attn.k_proj": (512, 3584), "self_attn.v_proj": (512, 3584),
        "self_attn.o_proj": (3584, 3584)}, 64, torch.bfloat16),
    "mistral-7b-r8-qv-fp32": ("mistralai/Mistral-7B-v0.1", 32, {
        "self_attn.q_proj": (4096, 4096), "self_attn.v_proj": (1024, 4096)}, 8, torch.float32),
    "llama-3.2-1b-r16-all-fp32": ("meta-llama/Llama-3.2-1B", 16, {
        "self_attn.q_proj": (2048, 2048), "self_attn.k_proj": (512, 2048), "self_attn.v_proj": (512, 2048),
        "self_attn.o_proj": (2048, 2048), "mlp.gate_proj": (8192, 2048), "mlp.up_proj": (8192, 2048),
        "mlp.down_proj": (2048, 8192)}, 16, torch.float32),
}
"""Synthetic adapters with the shapes of popular Hub LoRAs (random factors: the cost does not
depend on the values)."""


def hub_shaped_registry(root: Path) -> Path:
    """Write the :data:`HUB_SHAPED` adapters under ``root`` (about 220 MB); returns ``root``."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    for name, (base, layers, shapes, r, dtype) in HUB_SHAPED.items():
        tensors = {}
        for i in range(layers):
            for module, (d_out, d_in) in shapes.items():
                key = f"base_model.model.model.layers.{i}.{module}"
                tensors[f"{key}.lora_A.weight"] = (torch.randn(r, d_in, generator=g) * 0.01).to(dtype)
                tensors[f"{key}.lora_B.weight"] = (torch.randn(d_out, r, generator=g) * 0.01).to(dtype)
        folder = root / name
        folder.mkdir(parents=True)
        save_file(tensors, str(folder / "adapter_model.safetensors"))
        (folder / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "base_model_name_or_path": base,
            "target_modules": sorted({m.split(".")[-1] for m in shapes})}))
    return root


def section_memory(quick: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        size = _llama8b_adapter(Path(tmp) / "reg" / "llama8b-r16", layers=4 if quick else 32)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        run = json.loads(subprocess.run([sys.executable, "-c", RSS_CHILD, str(Path(tmp) / "reg"),
                                         str(Path(tmp) / "store")], env=env, capture_output=True, text=True,
                                        check=True).stdout)
    extra = run["peak"] - run["baseline"]
    print(f"## 3. peak RSS, one Llama-8B-shaped adapter (all projections, r=16): file {size/2**20:.0f} MiB")
    print(f"interpreter baseline {run['baseline']/2**20:.0f} MiB, scan peak {run['peak']/2**20:.0f} MiB: "
          f"+{extra/2**20:.0f} MiB = {extra/size:.2f} x the file (target < 2x); "
          f"{size/1e6/run['seconds']:.0f} MB/s\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", type=Path, default=ROOT.parent / "shared" / "realworld")
    ap.add_argument("--quick", action="store_true", help="smaller cases (a smoke run, not figures)")
    args = ap.parse_args()
    registry = args.registry if args.registry.is_dir() else None
    section_modules(registry, args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        registries = [("realworld (public adapters)", registry)] if registry is not None else []
        if not args.quick:
            registries.append(("hub-shaped (7-8B, 1B; synthetic)", hub_shaped_registry(Path(tmp) / "hub")))
        if registries:
            section_throughput(registries)
    section_memory(args.quick)


if __name__ == "__main__":
    main()
