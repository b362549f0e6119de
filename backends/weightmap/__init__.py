"""Weight import: a foreign checkpoint (Hugging Face, torchvision, a training run) mapped onto a
spec's weights by a declarative map file (see `mapfile`), every key accounted for.

    from nnspec.backends.weightmap import import_weights
    result = import_weights("specs/gpt.yaml", "model.safetensors", "specs/maps/gpt2_hf.yaml")
    save_weights(result.state_dict, "gpt2.safetensors")
"""

from .apply import ImportResult, WeightImportError, expected_weights, import_weights
from .checkpoint import CheckpointError, read_checkpoint
from .mapfile import MapError, Rule, Split, WeightMap, load_map

__all__ = ["CheckpointError", "ImportResult", "MapError", "Rule", "Split", "WeightImportError", "WeightMap",
           "expected_weights", "import_weights", "load_map", "read_checkpoint"]
