"""Pixels → backbone features with ONNX Runtime: the serving path without TensorFlow.

An index built with ``--runtime onnx`` carries the exported model (``model.onnx``, fp32 or int8)
and its SHA-256 in the manifest; the bot and ``lookalike-query`` run exactly that file, so they
never import TensorFlow (seconds of start-up and most of the process's memory). The exported graph
takes the same ``(N, S, S, 3)`` uint8 input as :class:`recommender.extractor.FeatureExtractor` and
returns the same L2-normalised vectors (fp32: equal within float rounding).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelLoadError
from .extractor import DEFAULT_BATCH_SIZE, FeatureExtractor
from .manifest import TENSORFLOW_RUNTIME, ModelIdentity

#: ``--runtime`` values
TENSORFLOW = TENSORFLOW_RUNTIME
ONNX = "onnx"
#: ``--precision`` values
FP32 = "fp32"
INT8 = "int8"
#: the model file inside an index directory
MODEL_FILE = "model.onnx"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def session_options(threads: int | None = None, memory_arena: bool = True) -> Any:
    """One intra-op pool sized to the machine and no inter-op pool: these cores are shared with decoding.

    ``memory_arena=False`` gives each pass's activations back when it ends instead of keeping them in
    ONNX Runtime's arena, sized for the largest batch seen: a server's choice (a 44k ResNet50 bot:
    -44 MB, batch-1 passes no slower), while a build's steady batches of 32 keep the arena."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or max(1, os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: no per-session warnings in the operator's terminal
    # Idle pool threads sleep instead of spinning: a spinning pool takes the cores decoding needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_cpu_mem_arena = memory_arena
    return options


class OnnxExtractor(FeatureExtractor):
    """A :class:`FeatureExtractor` that runs an exported ONNX model instead of Keras.

    ``identity`` is the Keras model's it was exported from (``exported``), with the runtime key
    of its precision, so an index refuses vectors from any other model or precision. ``sha256``,
    when given, must match the file (an index's model file swapped or damaged is refused).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        exported: ModelIdentity,
        precision: str,
        *,
        weights: str = "",
        sha256: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
        memory_arena: bool = True,
    ) -> None:
        super().__init__(exported.backbone, weights or None, exported.input_size, exported.pooling, batch_size)
        self.model_path = Path(model_path)
        self.exported = exported
        self.precision = precision
        self.sha256 = sha256
        self.threads = threads
        self.memory_arena = memory_arena
        self._session: Any = None
        self._input_name = ""

    @property
    def feature_dim(self) -> int:
        return self.exported.feature_dim

    @property
    def weights_source(self) -> str:
        return str(self.weights or "")

    @property
    def fingerprint(self) -> str:
        return self.exported.weights_fingerprint

    @property
    def identity(self) -> ModelIdentity:
        return ModelIdentity(
            backbone=self.exported.backbone,
            weights_fingerprint=self.exported.weights_fingerprint,
            input_size=self.exported.input_size,
            pooling=self.exported.pooling,
            feature_dim=self.exported.feature_dim,
            runtime=f"{ONNX}-{self.precision}",  # onnx-fp32, onnx-int8: int8 vectors differ from fp32 ones
        )

    def load(self) -> OnnxExtractor:
        """Open the ONNX Runtime session (idempotent); :class:`ModelLoadError` for a missing or foreign file."""
        if self._session is not None:
            return self
        if not self.model_path.is_file():
            raise ModelLoadError(f"ONNX model not found: {self.model_path}. Rebuild the index.")
        if self.sha256 is not None and file_sha256(self.model_path) != self.sha256:
            raise ModelLoadError(f"{self.model_path} is not the model this index was built with (checksum differs). Rebuild the index.")
        try:
            import onnxruntime as ort

            session = ort.InferenceSession(str(self.model_path), session_options(self.threads, self.memory_arena), providers=["CPUExecutionProvider"])
        except ImportError as exc:
            raise ModelLoadError("This index runs on ONNX Runtime, which is not installed: pip install -r requirements.txt.") from exc
        except Exception as exc:  # onnxruntime raises its own types for damaged files
            raise ModelLoadError(f"Could not load the ONNX model {self.model_path}: {exc}") from exc
        (model_input,) = session.get_inputs()
        self._input_name = model_input.name
        self._session = session
        self._session.run(None, {self._input_name: np.zeros((1, self.input_size, self.input_size, 3), np.uint8)})  # warm up
        return self

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One pass through ONNX Runtime (:meth:`FeatureExtractor.extract` checks, batches and normalises)."""
        (features,) = self._session.run(None, {self._input_name: np.ascontiguousarray(batch)})
        return np.asarray(features)
