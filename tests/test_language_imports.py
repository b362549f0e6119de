"""`imports:` of block libraries: paths relative to the importing file, inside the root (the top-level spec's
directory), namespaces, and located errors for missing files, cycles, clashes, escapes and URLs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nnspec.builder import SpecError, compile_graph, load_spec, nodes, param_count

SPECS = Path(__file__).resolve().parents[1] / "specs"

LIB = """\
blocks:
  act:
    inputs: [x]
    nodes: {f: {op: relu, in: x}}
    outputs: {y: f}
  twice:
    inputs: [x]
    nodes: {a: {op: act, in: x}, b: {op: act, in: a}}
    outputs: {y: b}
"""


def _main(imports: str, op: str = "twice") -> str:
    return (f"name: t\nimports: {imports}\ninputs: {{x: {{shape: [batch, 4]}}}}\n"
            f"nodes: {{n: {{op: {op}, in: x}}}}\noutputs: {{y: n}}\n")


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / next(iter(files))


def _error(path: Path) -> SpecError:
    with pytest.raises(SpecError) as exc:
        compile_graph(load_spec(path))
    return exc.value


def test_imported_blocks_are_called_by_name(tmp_path: Path) -> None:
    main = _write(tmp_path, {"main.yaml": _main("[lib/blocks.yaml]"), "lib/blocks.yaml": LIB})
    assert [n.id for n in nodes(compile_graph(load_spec(main)))] == ["x", "n.a.f", "n.b.f"]


def test_namespace(tmp_path: Path) -> None:
    main = _write(tmp_path, {"main.yaml": _main("[{path: lib.yaml, as: lib}]", "lib.twice"), "lib.yaml": LIB})
    g = compile_graph(load_spec(main))
    assert [n.id for n in nodes(g)] == ["x", "n.a.f", "n.b.f"]
    assert [f.block for f in nodes(g)[-1].scope] == ["lib.twice", "lib.act"]


def test_a_block_chosen_by_param_inside_a_namespaced_library_is_the_librarys(tmp_path: Path) -> None:
    lib = LIB.replace("nodes: {a: {op: act, in: x}, b: {op: act, in: a}}",
                      "params: {kind: act}\n    nodes: {a: {op: '${kind}', in: x}, b: {op: act, in: a}}")
    for imports, op in (("[lib.yaml]", "twice"), ("[{path: lib.yaml, as: L}]", "L.twice")):
        main = _write(tmp_path, {"main.yaml": _main(imports, op), "lib.yaml": lib})
        g = compile_graph(load_spec(main))
        assert [n.id for n in nodes(g)] == ["x", "n.a.f", "n.b.f"], imports


def test_imports_of_imports_and_a_file_reached_twice(tmp_path: Path) -> None:
    main = _write(tmp_path, {
        "main.yaml": _main("[a.yaml, sub/b.yaml]"),
        "a.yaml": "imports: [sub/lib.yaml]\nblocks: {}\n",
        "sub/b.yaml": "imports: [lib.yaml, ../a.yaml]\n",  # `..` that stays inside the root is fine
        "sub/lib.yaml": LIB,
    })
    assert len(compile_graph(load_spec(main))) == 3


def test_error_in_an_imported_block_points_into_its_file(tmp_path: Path) -> None:
    lib = LIB.replace("{op: relu, in: x}", "{op: relu, in: x, slope: 2}")
    main = _write(tmp_path, {"main.yaml": _main("[lib.yaml]"), "lib.yaml": lib})
    err = _error(main).errors[0]
    assert err.code == "unknown-key" and err.pos.file.endswith("lib.yaml") and err.pos.line == 4, err


def test_missing_file_is_located_at_the_entry(tmp_path: Path) -> None:
    main = _write(tmp_path, {"main.yaml": _main("[lib.yaml, nope.yaml]"), "lib.yaml": LIB})
    (err,) = _error(main).errors
    assert (err.code, err.pos.line, err.pos.col) == ("bad-import", 2, 21) and "nope.yaml" in err.message


def test_cycle(tmp_path: Path) -> None:
    main = _write(tmp_path, {"main.yaml": _main("[a.yaml]"), "a.yaml": "imports: [b.yaml]\n",
                             "b.yaml": "imports: [a.yaml]\n" + LIB})
    (err,) = _error(main).errors
    assert err.code == "import-cycle" and err.pos.file.endswith("b.yaml")


def test_two_imports_defining_a_block(tmp_path: Path) -> None:
    main = _write(tmp_path, {"main.yaml": _main("[a.yaml, b.yaml]"), "a.yaml": LIB, "b.yaml": LIB})
    errs = _error(main).errors
    assert {e.code for e in errs} == {"duplicate-block"} and errs[0].pos.line == 2
    # a namespace resolves it
    (tmp_path / "main.yaml").write_text(_main("[a.yaml, {path: b.yaml, as: b}]"))
    assert len(compile_graph(load_spec(main))) == 3


def test_import_clashing_with_a_local_block(tmp_path: Path) -> None:
    text = _main("[lib.yaml]") + "blocks:\n  act: {inputs: [x], nodes: {f: {op: tanh, in: x}}, outputs: {y: f}}\n"
    main = _write(tmp_path, {"main.yaml": text, "lib.yaml": LIB})
    (err,) = _error(main).errors
    assert (err.code, err.pos.line) == ("duplicate-block", 7)


@pytest.mark.parametrize("entry", ["../outside.yaml", "/etc/passwd", "https://example.com/lib.yaml",
                                   "file:///etc/passwd", "link/lib.yaml"])
def test_paths_outside_the_root_are_refused(tmp_path: Path, entry: str) -> None:
    root = tmp_path / "root"
    main = _write(root, {"main.yaml": _main(f"['{entry}']")})
    (tmp_path / "outside.yaml").write_text(LIB)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "lib.yaml").write_text(LIB)
    (root / "link").symlink_to(tmp_path / "elsewhere")
    (err,) = _error(main).errors
    assert err.code == "bad-import" and err.pos.line == 2, err


def test_absolute_path_inside_the_root(tmp_path: Path) -> None:
    main = _write(tmp_path, {"main.yaml": _main(f"['{tmp_path / 'lib.yaml'}']"), "lib.yaml": LIB})
    assert len(compile_graph(load_spec(main))) == 3


def test_text_spec_imports_from_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, {"lib.yaml": LIB})
    monkeypatch.chdir(tmp_path)
    assert len(compile_graph(load_spec(_main("[lib.yaml]")))) == 3


def test_dict_spec_with_imports_is_refused() -> None:
    spec = {"name": "t", "imports": ["lib.yaml"], "inputs": {"x": {"shape": ["batch", 4]}},
            "nodes": {"n": {"op": "relu", "in": "x"}}, "outputs": {"y": "n"}}
    with pytest.raises(SpecError) as exc:
        compile_graph(load_spec(spec))
    assert exc.value.errors[0].code == "bad-import" and "dict" in exc.value.errors[0].message


def test_resnet50_count() -> None:
    g = compile_graph(load_spec(SPECS / "resnet50.yaml"))
    assert param_count(g) == 25_557_032
    projections = sorted({n.id.rsplit(".", 2)[0] for n in nodes(g) if ".downsample." in n.id})
    assert projections == [f"layer{i}.first" for i in range(1, 5)]  # only the first block of each stage projects


def test_resnet18_from_the_basic_block(tmp_path: Path) -> None:
    """The same library builds ResNet-18 (torchvision: 11,689,512 parameters) from `basic_stage`."""
    shutil.copy(SPECS / "blocks" / "resnet.yaml", tmp_path / "resnet.yaml")
    stages = "\n".join(f"  layer{i}: {{op: basic_stage, in: {prev}, out_c: {w}, blocks: 2, stride: {s}}}"
                       for i, (prev, w, s) in enumerate([("pool", 64, 1), ("layer1", 128, 2), ("layer2", 256, 2),
                                                         ("layer3", 512, 2)], start=1))
    (tmp_path / "r18.yaml").write_text(
        "name: r18\nimports: [resnet.yaml]\ninputs: {image: {shape: [batch, 3, 224, 224]}}\nnodes:\n"
        "  conv1: {op: conv2d, in: image, out_channels: 64, kernel_size: 7, stride: 2, padding: 3, bias: false}\n"
        "  bn1: {op: batch_norm, in: conv1}\n  relu: {op: relu, in: bn1}\n"
        "  pool: {op: max_pool2d, in: relu, kernel_size: 3, stride: 2, padding: 1}\n" + stages + "\n"
        "  gap: {op: mean, in: layer4, dim: [2, 3]}\n  fc: {op: linear, in: gap, out_features: 1000}\n"
        "outputs: {logits: fc}\n")
    assert param_count(compile_graph(load_spec(tmp_path / "r18.yaml"))) == 11_689_512
