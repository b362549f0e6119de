"""The live op registry, the shared lowering table, and the did-you-mean for unknown ops (in process).

The plugin commands themselves (entry points, --plugin, NNSPEC_PLUGINS and their errors) run
in subprocesses in `test_plugins_cli.py`, so that no test leaves a plugin op registered here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

import pytest

from nnspec.backends.graphviz.style import look_of
from nnspec.backends.table import LoweringTable, MissingLoweringError
from nnspec.builder import OPS, SpecError, TensorType, load_spec
from nnspec.builder.errors import did_you_mean
from nnspec.builder.ops.base import Op, RegistryError, register, registering_for, unregister
from nnspec.builder.schema import json_schema


class _Cube(Op):
    """Cube: y = x^3.

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["test_cube"]
    FAMILY: ClassVar[str] = "activation"

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        return {"y": ins["x"]}


@pytest.fixture
def cube() -> Iterator[str]:
    """`test_cube` registered as a plugin op for one test."""
    with registering_for("test_plugin"):
        register(_Cube)
    yield "test_cube"
    unregister("test_cube")


# --- the live registry --------------------------------------------------------------------

def test_table_reads_the_registry_live(cube: str) -> None:
    known: dict[str, object] = {}
    table: LoweringTable = LoweringTable("test", known)
    with pytest.raises(ValueError, match="unknown op 'late'"):
        table.register("late")
    known["late"] = object  # registered after the table was made
    table.register("late")(lambda e, n: None)
    assert list(table) == ["late"] and table.missing() == []


def test_a_plugin_op_is_known_everywhere_once_registered(cube: str) -> None:
    table: LoweringTable = LoweringTable("test")  # over builder.OPS
    assert cube in table.missing()
    table.register(cube)(lambda e, n: None)
    assert cube in table
    spec = load_spec({"name": "m", "inputs": {"x": {"shape": [2, 3]}}, "nodes": {"c": {"op": cube, "in": "x"}},
                      "outputs": {"y": "c"}})
    assert spec.nodes["c"]["op"] == cube
    schema = json_schema()
    assert cube in str(schema["$defs"]) and cube in schema["$defs"]["BlockCall"]["properties"]["op"]["not"]["enum"]


def test_missing_lowering_names_the_op_and_its_plugin(cube: str) -> None:
    table: LoweringTable = LoweringTable("onnx")
    with pytest.raises(MissingLoweringError, match=r"op 'test_cube' \(from plugin 'test_plugin'\) has no ONNX lowering"):
        table[cube]
    with pytest.raises(KeyError):  # still a KeyError, as the table's missing key
        table[cube]


def test_a_removed_op_leaves_no_lowering_behind(cube: str) -> None:
    table: LoweringTable = LoweringTable("test")
    table.register(cube)(lambda e, n: None)
    unregister(cube)
    assert cube not in table and cube not in list(table) and table.unknown() == [cube]
    with pytest.raises(MissingLoweringError, match="unknown op 'test_cube'"):
        table[cube]


def test_clash_with_a_built_in_op_names_both() -> None:
    class Relu2(_Cube):
        """Another relu.

        Input shape: any. Output shape: same as the input.
        """

        op: Literal["relu"]  # type: ignore[assignment]

    with registering_for("clashing"), pytest.raises(
            RegistryError, match=r"op 'relu' is registered twice: by nnspec's built-in ops .* and by plugin 'clashing'"):
        register(Relu2)
    assert OPS["relu"] is not Relu2


def test_an_op_without_a_shape_row_is_drawn_as_a_rounded_box(cube: str) -> None:
    look = look_of("op", cube, "activation")
    assert (look.shape, look.style) == ("box", "rounded,filled")


# --- did you mean ---------------------------------------------------------------------------

@pytest.mark.parametrize(("word", "meant"), [
    ("relu_6", "relu6"), ("swish", "silu"), ("deconv2d", "conv_transpose2d"), ("interpolate2d", "upsample"),
    ("upsampling", "upsample"), ("LayerNorm", "layer_norm"), ("hswish", "hardswish"), ("rmsnorm", "rms_norm"),
    ("groupnorm", "group_norm"), ("lienar", "linear"),
])
def test_unknown_op_hints_the_real_op(word: str, meant: str) -> None:
    assert meant in OPS, f"'{meant}' is not registered"
    assert did_you_mean(word, OPS)[0] == f"did you mean '{meant}'?"


@pytest.mark.parametrize(("word", "choices", "meant"), [
    ("deconv1d", ["conv1d", "conv_transpose1d", "conv_transpose2d"], "conv_transpose1d"),
    ("tile", ["repeat", "silu"], "repeat"),
    ("zeros", ["constant", "conv2d"], "constant"),
    ("resize", ["upsample", "reshape"], "upsample"),
])
def test_aliases_follow_the_choices(word: str, choices: list[str], meant: str) -> None:
    assert did_you_mean(word, choices) == (f"did you mean '{meant}'?",)


def test_an_alias_of_an_unregistered_op_suggests_nothing_misleading() -> None:
    assert did_you_mean("tile", ["silu", "tanh"]) == ()  # not silu because of the spelling


def test_a_family_word_lists_the_family() -> None:
    hints = did_you_mean("myconv", ["conv1d", "conv2d", "linear", "relu"])
    assert hints[0] in ("did you mean 'conv1d'?", "did you mean 'conv2d'?")
    assert hints[1].startswith("related: conv")
    assert "relu" not in " ".join(did_you_mean("spatialnorm", ["batch_norm", "layer_norm", "relu"]))


def test_a_spec_with_an_alias_gets_the_hint() -> None:
    with pytest.raises(SpecError) as info:
        from nnspec.builder import check_spec

        check_spec(load_spec({"name": "m", "inputs": {"x": {"shape": [2, 3]}},
                              "nodes": {"a": {"op": "swish", "in": "x"}}, "outputs": {"y": "a"}}))
    (diag,) = info.value.errors
    assert diag.code == "unknown-op" and "did you mean 'silu'?" in diag.hints
