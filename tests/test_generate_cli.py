"""`nnspec generate`: ids in, ids out (streamed), from a spec or an .onnx file, with and without the
cache; batches of prompts; sampling; usage and input errors with their exit status."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from nnspec.backends.cli import cli
from nnspec.backends.jsonout import SCHEMA_PATH
from nnspec.backends.onnx import to_onnx
from nnspec.backends.onnx.generate import generate_onnx
from nnspec.builder import load_spec

SETS = {"vocab": 60, "n_ctx": 48, "d_model": 16, "layers": 2, "heads": 2}
SET_ARGS = [a for k, v in SETS.items() for a in ("--set", f"{k}={v}")]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    assert not isinstance(result.exception, AssertionError | TypeError | AttributeError), result.exception
    return result.exit_code, result.stdout, result.stderr


def _expected(prompts: list[list[int]], new: int, **kw: object) -> np.ndarray:
    spec = load_spec("specs/gpt.yaml", SETS)
    model = to_onnx(spec, signature="with_past", seed=0)  # the command's weights: initialised from --seed 0
    return generate_onnx(model, prompt=prompts, max_new_tokens=new, **kw)  # type: ignore[arg-type]


def test_a_spec_streams_the_cached_greedy_ids() -> None:
    code, out, err = invoke("generate", "specs/gpt.yaml", *SET_ARGS, "--prompt-ids", "1,2,3", "--max-new-tokens", "9")
    assert code == 0, err
    want = _expected([[1, 2, 3]], 9)[0, 3:].tolist()
    assert [int(t) for t in out.split()] == want
    assert "9 tokens in" in err and "tokens/s" in err


def test_no_cache_and_sampling_and_stop_tokens() -> None:
    base = ["generate", "specs/gpt.yaml", *SET_ARGS, "--prompt-ids", "4,5", "--max-new-tokens", "8"]
    _, cached, _ = invoke(*base)
    code, plain, err = invoke(*base, "--no-cache")
    assert code == 0, err
    assert plain.split() == cached.split()
    code, sampled, err = invoke(*base, "--temperature", "1.2", "--top-k", "10", "--top-p", "0.9", "--seed", "0")
    assert code == 0, err
    want = _expected([[4, 5]], 8, temperature=1.2, top_k=10, top_p=0.9, seed=0)[0, 2:].tolist()
    assert [int(t) for t in sampled.split()] == want
    stop = cached.split()[2]
    code, stopped, _ = invoke(*base, "--stop-token", stop)
    assert code == 0
    first = cached.split().index(stop)
    assert stopped.split() == cached.split()[:first + 1]  # one row: it stops at its stop token


def test_a_batch_of_prompts_prints_one_line_per_step_and_json() -> None:
    prompts = [[7, 8, 9, 10], [11]]
    args = ["generate", "specs/gpt.yaml", *SET_ARGS, "--prompt-ids", "7,8,9,10", "--prompt-ids", "11",
            "--max-new-tokens", "5"]
    code, out, err = invoke(*args)
    assert code == 0, err
    rows = [[int(t) for t in line.split()] for line in out.splitlines()]
    want = _expected(prompts, 5)[:, 4:]
    assert np.array_equal(np.array(rows).T, want)
    code, out, _ = invoke(*args, "--json")
    doc = json.loads(out)  # one document, nothing streamed before it
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(doc)
    assert doc["command"] == "generate" and doc["ok"] and code == 0
    assert doc["new_ids"] == want.tolist() and doc["new_tokens"] == 10 and doc["tokens_per_second"] > 0
    code, out, _ = invoke("generate", "specs/gpt.yaml", "--prompt-ids", "1,x", "--json")
    doc = json.loads(out)
    assert code == 2 and not doc["ok"] and "token ids" in doc["diagnostics"][0]["message"]


def test_an_onnx_file_with_or_without_the_cache(tmp_path: Path) -> None:
    spec = load_spec("specs/gpt.yaml", SETS)
    cached, plain = tmp_path / "cached.onnx", tmp_path / "plain.onnx"
    cached.write_bytes(to_onnx(spec, signature="with_past", seed=3).SerializeToString())
    plain.write_bytes(to_onnx(spec, seed=3).SerializeToString())
    outs = []
    for path in (cached, plain):
        code, out, err = invoke("generate", str(path), "--prompt-ids", "3,1", "--max-new-tokens", "6")
        assert code == 0, err
        outs.append(out.split())
    assert outs[0] == outs[1] and len(outs[0]) == 6


@pytest.mark.parametrize(("args", "code", "message"), [
    (["specs/gpt.yaml", "--prompt-ids", "1,x"], 2, "comma-separated token ids"),
    (["specs/gpt.yaml", "--prompt-ids", ""], 2, "one or more"),
    (["specs/gpt.yaml", "--prompt-ids", "1", "--top-p", "0"], 2, "--top-p"),
    (["specs/transformer.yaml", "--prompt-ids", "1"], 1, "encoder-decoder"),
    (["specs/lenet5.yaml", "--prompt-ids", "1"], 1, "token input"),
    (["specs/gpt.yaml", *SET_ARGS, "--prompt-ids", "1", "--max-new-tokens", "60"], 1, "exceed the context"),
    (["specs/gpt.yaml", *SET_ARGS, "--prompt-ids", "999"], 1, "token id 999 is outside the 60 ids"),
])
def test_bad_input_exits_with_one_line(args: list[str], code: int, message: str) -> None:
    got, out, err = invoke("generate", *args)
    assert got == code, (out, err)
    assert message in err
    assert "Traceback" not in err


def test_a_broken_onnx_file_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    code, _, err = invoke("generate", str(bad), "--prompt-ids", "1")
    assert code == 1 and "error:" in err and "Traceback" not in err
