"""The built modules learn (slow: each trains for up to a minute or two on one CPU thread).
Each test runs the training function of a script in examples/ and checks the figure it reports."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow


def _example(name: str) -> ModuleType:
    path = Path("examples") / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_lenet5_on_sklearn_digits_reaches_95_percent() -> None:
    assert _example("lenet5_digits").train(epochs=15) >= 0.95


@pytest.mark.parametrize("spec", ["lstm_seq2seq", "transformer"])
def test_seq2seq_learns_to_reverse(spec: str) -> None:
    result = _example("seq2seq_reverse").train(spec)
    assert result["exact_match"] >= 0.95


def test_gpt_learns_a_character_corpus_and_generates() -> None:
    result = _example("gpt_chars").train()
    assert result["test_loss"] < 0.7 * result["unigram_entropy"]
    sample = result["sample"]
    assert sample.startswith("Beautiful is better") and len(sample) == len("Beautiful is better") + 80


def test_bert_mlm_and_nsp_losses_fall() -> None:
    history = _example("bert_pretrain").train()
    for head in ("mlm", "nsp"):
        first = sum(history[head][:20]) / 20
        last = sum(history[head][-20:]) / 20
        assert last < 0.6 * first, (head, first, last)
