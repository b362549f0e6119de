"""A JSON Schema for spec files, generated from the pydantic models (`nnspec schema`).

Every node is checked against its op's argument model, discriminated on ``op`` with one
``if``/``then`` per op, so that an editor offers the op names, then that op's arguments, and a
wrong argument is reported against that op alone (not "not valid under any of the given
schemas"). A node whose ``op`` names a block is a block call, whose extra keys are the block's
params; in a spec that declares no blocks and imports none, an ``op`` that is no registered op
(a misspelling) is an error. Any op argument may instead be a ``${...}`` expression.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from .ops import OPS, Op
from .ops.base import NodeInputs
from .plugins import load_plugins
from .spec import BlockSpec, SignatureSpec, Spec

__all__ = ["json_schema"]

_EXPR = {"type": "string", "pattern": r"^.*\$\{.+\}.*$", "description": "A ${...} expression over params."}
_WHEN = {"anyOf": [{"type": "boolean"}, _EXPR], "description": "Whether the node exists; when false, refs to it "
         "stand for its first input."}


class BlockCall(BaseModel):
    """A call of a block defined under `blocks`; other keys set the block's params."""

    model_config = ConfigDict(extra="allow")

    op: str = Field(description="The name of a block defined under `blocks`.")
    in_: NodeInputs = Field(alias="in", description="The block's inputs: a ref, a list, or input: ref.")
    repeat: int | None = Field(default=None, ge=0, description="Chain this many copies with separate weights "
                               "(0: the call passes its first input on).")
    doc: str | None = None


def _tag(value: Any) -> str:
    op = value.get("op") if isinstance(value, dict) else getattr(value, "op", None)
    return op if op in OPS else "block"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a spec file, over the ops registered now (plugins included)."""
    load_plugins()
    members = (*(Annotated[cls, Tag(name)] for name, cls in sorted(OPS.items())), Annotated[BlockCall, Tag("block")])
    node = Annotated[Union[members], Discriminator(_tag)]  # type: ignore[valid-type]  # noqa: UP007 - built at run time

    class Block(BlockSpec):
        nodes: dict[str, node] = Field(min_length=1)  # type: ignore[valid-type]

    class Signature(SignatureSpec):
        pass

    class NnSpec(Spec):
        nodes: dict[str, node] = Field(min_length=1)  # type: ignore[valid-type]
        blocks: dict[str, Block] = Field(default_factory=dict)  # type: ignore[assignment]
        signatures: dict[str, Signature] = Field(default_factory=dict)  # type: ignore[assignment]

    schema = NnSpec.model_json_schema(by_alias=True)
    for name, definition in schema.get("$defs", {}).items():
        cls = OPS.get(_op_of(name))
        if cls is None:
            continue
        for key, prop in definition.get("properties", {}).items():
            if key not in Op.model_fields and key != "in":
                definition["properties"][key] = _or_expr(prop)
        definition["properties"]["when"] = _WHEN
    # A block call's op is any name but a registered op's, so each node matches one member.
    call = schema["$defs"]["BlockCall"]["properties"]
    call["op"]["not"] = {"enum": sorted(OPS)}
    call["repeat"] = {"anyOf": [*call["repeat"]["anyOf"], _EXPR]}
    call["when"] = _WHEN
    _discriminate(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "nnspec model spec"
    return schema


def _discriminate(schema: dict[str, Any]) -> None:
    """Replace each ``oneOf`` over the node models by an ``if``/``then`` per op, and refuse an op that is
    no registered op in a spec without blocks (a block call needs a block to call)."""
    refs = {f"#/$defs/{cls.__name__}": name for name, cls in OPS.items()}
    ops = sorted(OPS)
    node: dict[str, Any] = {
        "type": "object", "required": ["op"],
        "properties": {"op": {"anyOf": [{"enum": ops}, {"type": "string"}],
                              "description": "An op (`nnspec ops` lists them), a block of this file, or ${...}."}},
        "allOf": [*({"if": {"properties": {"op": {"const": refs[ref]}}, "required": ["op"]}, "then": {"$ref": ref}}
                    for ref in sorted(refs, key=refs.__getitem__)),
                  {"if": {"properties": {"op": {"not": {"enum": ops}}}, "required": ["op"]},
                   "then": {"$ref": "#/$defs/BlockCall"}}],
    }
    schema.setdefault("$defs", {})["Node"] = node

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            alts = value.get("oneOf")
            if isinstance(alts, list) and alts and all(isinstance(a, dict) and a.get("$ref") in (*refs, "#/$defs/BlockCall")
                                                       for a in alts):
                return {"$ref": "#/$defs/Node"}
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    for key in ("properties", "$defs"):
        schema[key] = walk(schema[key])
    schema["$defs"]["Node"] = node
    known = {"if": _EXPR, "else": {"enum": ops}}  # an op chosen by a param, else a registered op
    schema.setdefault("allOf", []).append({
        "if": {"not": {"anyOf": [{"required": ["blocks"]}, {"required": ["imports"]}]}},
        "then": {"properties": {"nodes": {"additionalProperties": {"properties": {"op": known}}}}},
    })


def _or_expr(prop: dict[str, Any]) -> dict[str, Any]:
    """`prop`, or a ``${...}`` expression in its place, and in place of each item of a list."""
    prop = dict(prop)
    if isinstance(prop.get("items"), dict):
        prop["items"] = _or_expr(prop["items"])
    for key in ("anyOf", "prefixItems"):
        if isinstance(prop.get(key), list):
            prop[key] = [_or_expr(p) if isinstance(p, dict) else p for p in prop[key]]
    return {**prop, "anyOf": [*prop["anyOf"], _EXPR]} if "anyOf" in prop else {"anyOf": [prop, _EXPR]}


def _op_of(def_name: str) -> str:
    return next((name for name, cls in OPS.items() if cls.__name__ == def_name), "")
