"""The vision zoo (specs/resnet50.yaml, mobilenet_v2.yaml, unet.yaml) against hand-written PyTorch references.

For each spec: the reference (tests/zoo_references.py, torchvision's and milesial's module layouts) and the spec
have the published parameter count at full size; at a reduced size, the reference's weights (batch-norm running
stats and every bias randomised first, so that zero-initialised tensors prove nothing) copied into the nnspec
module through an explicit name map give the same outputs in eval mode; onnxruntime agrees with the nnspec
module on the same weights; and the diagram renders.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zoo_references as refs
from click.testing import CliRunner
from torch import nn

from nnspec.backends.graphviz.commands import render as render_command
from nnspec.backends.onnx import random_inputs, run_onnx, session, to_onnx
from nnspec.backends.pytorch import to_torch
from nnspec.builder import compile_graph, load_spec, param_count

SPECS = Path(__file__).resolve().parents[1] / "specs"
TOL = 1e-4

PUBLISHED = {
    "resnet50": 25_557_032,  # torchvision resnet50 (ResNet v1.5)
    "mobilenet_v2": 3_504_872,  # torchvision mobilenet_v2
    "unet": 31_037_698,  # milesial/Pytorch-UNet UNet(n_channels=3, n_classes=2, bilinear=False)
}

SMALL: dict[str, dict[str, Any]] = {
    "resnet50": {"width": 8, "num_classes": 10},
    "mobilenet_v2": {"width_mult": 0.25, "last_channel": 64, "num_classes": 10},
    "unet": {"base": 4, "height": 37, "width": 30, "n_classes": 3},
}
"""Overrides that scale each spec down to test size (same structure, small widths and images)."""


def _spec_path(name: str) -> Path:
    return SPECS / f"{name}.yaml"


# --- the references themselves --------------------------------------------------------------------------------

REFERENCES: dict[str, Callable[[], nn.Module]] = {
    "resnet50": refs.ResNet,
    "mobilenet_v2": refs.MobileNetV2,
    "unet": refs.UNet,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_reference_has_the_published_count(name: str) -> None:
    with torch.device("meta"):
        assert refs.param_count(REFERENCES[name]()) == PUBLISHED[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_spec_has_the_published_count(name: str) -> None:
    assert param_count(compile_graph(load_spec(_spec_path(name)))) == PUBLISHED[name]


def test_make_divisible_is_torchvision_s() -> None:
    assert [refs.make_divisible(v) for v in (32, 16 * 0.25, 11.9, 1280 * 1.4, 24 * 0.35)] == [32, 8, 16, 1792, 8]


# --- weight transplant ----------------------------------------------------------------------------------------

def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights, biases and batch-norm statistics (variance in [0.5, 2]), so that every copied tensor counts."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) * 1.5 + 0.5)
            elif name.endswith(("bias", "running_mean")) or tensor.dim() == 1:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * (2.0 / tensor[0].numel()) ** 0.5)
    return module.eval()


def transplant(ref: nn.Module, ours: nn.Module, prefixes: dict[str, str]) -> None:
    """Copy every reference tensor into `ours`: module prefix `a.b` of the reference becomes `prefixes[a.b]`."""
    target = ours.state_dict()
    copied: dict[str, torch.Tensor] = {}
    for key, value in ref.state_dict().items():
        module, leaf = key.rsplit(".", 1)
        assert module in prefixes, f"no name for the reference's {module}"
        ours_key = f"{prefixes[module]}.{leaf}"
        assert ours_key in target, f"{key} -> {ours_key}: not in the nnspec module"
        assert target[ours_key].shape == value.shape, (key, ours_key)
        copied[ours_key] = value
    assert set(copied) == set(target), f"nnspec weights with no reference tensor: {sorted(set(target) - set(copied))}"
    ours.load_state_dict(copied)


def _conv_bn(ref: str, ours: str) -> dict[str, str]:
    """torchvision's Conv2dNormActivation (`0` conv, `1` batch norm) as a conv_bn block (`conv`, `bn`)."""
    return {f"{ref}.0": f"{ours}.conv", f"{ref}.1": f"{ours}.bn"}


def mobilenet_v2_names(setting: tuple[tuple[int, int, int, int], ...] = refs.MOBILENET_V2_SETTING) -> dict[str, str]:
    """torchvision's features.k (k = 1..17: the inverted residuals in table order) -> stage{i}.first / .rest.{j}."""
    names = _conv_bn("features.0", "stem")
    k = 1
    for i, (t, _, n, _) in enumerate(setting, start=1):
        for j in range(n):
            block = f"stage{i}.first" if j == 0 else f"stage{i}.rest.{j - 1}"
            parts = ["expand", "depthwise"] if t != 1 else ["depthwise"]
            for m, part in enumerate(parts):
                names |= _conv_bn(f"features.{k}.conv.{m}", f"{block}.{part}")
            names[f"features.{k}.conv.{len(parts)}"] = f"{block}.project"
            names[f"features.{k}.conv.{len(parts) + 1}"] = f"{block}.project_bn"
            k += 1
    names |= _conv_bn(f"features.{k}", "head")
    names["classifier.1"] = "classifier"
    return names


def resnet50_names(layers: tuple[int, ...] = (3, 4, 6, 3)) -> dict[str, str]:
    """torchvision's layer{i}.{j} -> layer{i}.first (j = 0) / layer{i}.rest.{j-1}; downsample.0/1 -> .conv/.bn."""
    names = {"conv1": "conv1", "bn1": "bn1", "fc": "fc"}
    for i, n in enumerate(layers, start=1):
        for j in range(n):
            block = f"layer{i}.first" if j == 0 else f"layer{i}.rest.{j - 1}"
            names |= {f"layer{i}.{j}.{m}": f"{block}.{m}" for m in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")}
        names |= {f"layer{i}.0.downsample.0": f"layer{i}.first.downsample.conv",
                  f"layer{i}.0.downsample.1": f"layer{i}.first.downsample.bn"}
    return names


def _double_conv(ref: str, ours: str) -> dict[str, str]:
    """milesial's DoubleConv Sequential (0 conv, 1 bn, 2 relu, 3 conv, 4 bn) -> conv1, bn1, conv2, bn2."""
    return {f"{ref}.double_conv.{i}": f"{ours}.{n}" for i, n in ((0, "conv1"), (1, "bn1"), (3, "conv2"), (4, "bn2"))}


def unet_names() -> dict[str, str]:
    names = _double_conv("inc", "inc")
    for k in range(1, 5):
        names |= _double_conv(f"down{k}.maxpool_conv.1", f"down{k}.conv")
        names |= _double_conv(f"up{k}.conv", f"up{k}.conv")
        names[f"up{k}.up"] = f"up{k}.up"
    names["outc.conv"] = "outc"
    return names


class Case:
    """A spec at a reduced size, its reference at the same size, the map of names, and input sizes to try."""

    def __init__(self, spec: str, overrides: dict[str, Any], reference: Callable[[], nn.Module],
                 names: Callable[[], dict[str, str]], sizes: list[dict[str, int]]) -> None:
        self.spec, self.overrides, self.reference, self.names, self.sizes = spec, overrides, reference, names, sizes

    def module(self) -> Any:
        return to_torch(load_spec(_spec_path(self.spec), self.overrides)).eval()

    def image(self, sizes: dict[str, int], seed: int = 0) -> torch.Tensor:
        """A random image; U-Net fixes its height and width by params (its padding is computed from them)."""
        gen = torch.Generator().manual_seed(seed)
        size = {**sizes, **{k: v for k, v in self.overrides.items() if k in ("height", "width")}}
        return torch.randn(size["batch"], 3, size["height"], size["width"], generator=gen)


CASES: dict[str, Case] = {
    # width 8: every stage's first block projects its shortcut (layer1 too: 8 -> 32 channels), the others do not
    "resnet50": Case("resnet50", SMALL["resnet50"], lambda: refs.ResNet(num_classes=10, width=8),
                     resnet50_names, [{"batch": 2, "height": 224, "width": 224}]),
    "mobilenet_v2": Case("mobilenet_v2", SMALL["mobilenet_v2"],
                         lambda: refs.MobileNetV2(num_classes=10, width_mult=0.25, last_channel=64), mobilenet_v2_names,
                         [{"batch": 2, "height": 32, "width": 32}, {"batch": 1, "height": 45, "width": 19}]),
    # full width: stage 1 goes 32 -> 16 channels, so its block has no residual (at width 0.25 it has one)
    "mobilenet_v2_full_width": Case("mobilenet_v2", {"num_classes": 10}, lambda: refs.MobileNetV2(num_classes=10),
                                    mobilenet_v2_names, [{"batch": 2, "height": 32, "width": 32}]),
    # 37 x 30 pads every skip join but one: by 1 after, by 1 on both sides, by 0
    "unet": Case("unet", SMALL["unet"], lambda: refs.UNet(3, 3, base=4), unet_names, [{"batch": 2}, {"batch": 1}]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_transplanted_weights_give_the_reference_outputs(case: str) -> None:
    c = CASES[case]
    ref = randomise(c.reference())
    ours = c.module()
    transplant(ref, ours, c.names())
    for seed, sizes in enumerate(c.sizes):
        x = c.image(sizes, seed)
        with torch.no_grad():
            want, got = ref(x), ours(x)
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= TOL, f"{case} at {sizes}"


@pytest.mark.parametrize("case", ["mobilenet_v2", "resnet50", "unet"])
def test_transplant_sees_a_changed_weight(case: str) -> None:
    """The comparison above can fail: one perturbed batch-norm statistic moves the output."""
    c = CASES[case]
    ref = randomise(c.reference())
    ours = c.module()
    transplant(ref, ours, c.names())
    last_bn = [m for m in ref.modules() if isinstance(m, nn.BatchNorm2d)][-1]
    with torch.no_grad():
        last_bn.get_buffer("running_mean").add_(1.0)
        x = c.image(c.sizes[0])
        assert (ours(x) - ref(x)).abs().max().item() > 1e-2


@pytest.mark.parametrize("width_mult", [0.35, 0.5, 0.75, 1.4])
def test_mobilenet_v2_counts_at_other_widths(width_mult: float) -> None:
    """The spec's channel rounding is torchvision's _make_divisible (the 1280-channel head grows only above 1.0)."""
    spec = load_spec(_spec_path("mobilenet_v2"), {"width_mult": width_mult})
    with torch.device("meta"):
        assert param_count(compile_graph(spec)) == refs.param_count(refs.MobileNetV2(width_mult=width_mult))


# --- ONNX -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["mobilenet_v2", "resnet50", "unet"])
def test_onnx_agrees_with_the_module(case: str) -> None:
    c = CASES[case]
    ours = c.module()
    transplant(randomise(c.reference()), ours, c.names())
    model = to_onnx(load_spec(_spec_path(c.spec), c.overrides), ours.state_dict())
    sess = session(model)
    for seed, sizes in enumerate(c.sizes):
        feed = random_inputs(model, sizes, seed=seed)
        (got,) = run_onnx(sess, feed).values()
        with torch.no_grad():
            want = ours(**{k: torch.from_numpy(v) for k, v in feed.items()}).numpy()
        assert got.shape == want.shape
        assert float(np.max(np.abs(got - want))) <= TOL * max(1.0, float(np.max(np.abs(want)))), f"{case} at {sizes}"

# --- diagram --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SMALL))
def test_diagram_renders(name: str, tmp_path: Path) -> None:
    sets = [a for k, v in SMALL[name].items() for a in ("--set", f"{k}={v}")]
    out = tmp_path / f"{name}.svg"
    result = CliRunner().invoke(render_command, [str(_spec_path(name)), "-o", str(out), *sets])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().count(b'class="node"') >= 5
