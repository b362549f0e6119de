"""Load + check time against the number of nodes: a generated chain of N nodes.

Run: .venv/bin/python bench/check_scaling.py
Prints, per spec, the best of five runs of `load_spec` (parse + structure + params) and of
`compile_graph` (expansion, wiring checks, symbolic shape inference): a generated chain of
alternating linear/relu nodes (symbolic in batch) of 10 to 10,000 nodes, then every spec in
specs/; then, for each spec with a layer-count param, the nodes one more layer adds.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import yaml

from nnspec.builder import compile_graph, load_spec

ROOT = Path(__file__).resolve().parent.parent


def chain_spec(n: int) -> str:
    nodes = {}
    prev = "x"
    for i in range(n):
        nid = f"n{i}"
        nodes[nid] = {"op": "linear", "in": prev, "out_features": 16} if i % 2 == 0 else {"op": "relu", "in": prev}
        prev = nid
    spec = {"name": f"chain{n}", "inputs": {"x": {"shape": ["batch", 16]}}, "nodes": nodes, "outputs": {"y": prev}}
    return yaml.safe_dump(spec, sort_keys=False, default_flow_style=None)


def best_of(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    print(f"{'spec':<14}{'nodes':>7}{'load ms':>10}{'check ms':>10}{'total ms':>10}{'µs/node':>9}")
    rows = [(f"chain{n}", _chain_file(n)) for n in (10, 100, 1000, 10000)]
    rows += [(path.stem, path) for path in sorted((ROOT / "specs").glob("*.yaml"))]
    for name, path in rows:
        load = best_of(lambda p=path: load_spec(p))
        spec = load_spec(path)
        check = best_of(lambda s=spec: compile_graph(s))
        size = len(compile_graph(spec))
        total = load + check
        print(f"{name:<14}{size:>7}{load * 1e3:>10.1f}{check * 1e3:>10.1f}{total * 1e3:>10.1f}{total / size * 1e6:>9.1f}")
    print(f"\n{'spec':<14}{'param':>20}{'nodes per layer':>17}")
    for path in sorted((ROOT / "specs").glob("*.yaml")):
        params = load_spec(path).params
        key = next((k for k in LAYER_PARAMS if k in params), None)
        if key is not None:
            one, two = (len(compile_graph(load_spec(path, overrides={key: n}))) for n in (1, 2))
            if two > one:  # a layer count that is an op argument (a 2-layer LSTM) adds no nodes
                print(f"{path.stem:<14}{key:>20}{two - one:>17}")


LAYER_PARAMS = ("layers", "num_layers", "n_layer", "num_hidden_layers")
"""Names a spec's layer-count param goes by (ours, and Hugging Face configs')."""


def _chain_file(n: int) -> Path:
    path = Path(tempfile.gettempdir()) / f"nnspec_chain_{n}.yaml"
    path.write_text(chain_spec(n))
    return path


if __name__ == "__main__":
    main()
