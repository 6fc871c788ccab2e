"""Self-describing checkpoints: ``model.safetensors`` + ``medmm.json`` in one folder.

The JSON carries everything that gives the weights meaning: architecture config, the ordered findings,
preprocessing, per-finding calibration temperatures and operating thresholds, the out-of-distribution
reference, training-data summary, version, and the sha256 of the weights file. Loading never unpickles:
weights are safetensors, metadata is JSON. A checkpoint whose findings differ from the ones the caller
expects is refused (no silent re-ordering).

Importing this module is torch-free: ``read_meta`` and ``load_references`` (the out-of-distribution reference and
the scope check, plain numpy) serve the torch-free prediction path; ``load_checkpoint`` and ``save_checkpoint``
import torch when called.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from medmm import __version__
from medmm.config import META_FILE, WEIGHTS_FILE, ModelConfig, Preprocessing
from medmm.labels import FINDINGS

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CHECKPOINT_ENV = "MEDMM_CHECKPOINT"


def default_checkpoint() -> Path:
    """The checkpoint used when none is named, by one lookup: ``$MEDMM_CHECKPOINT``; the checkout's
    ``checkpoints/default`` (running from the repository); the copy ``pip install`` puts under
    ``<prefix>/share/medmm/checkpoints/default`` (an installed medmm, run from any folder). ``--checkpoint`` and the
    app's ``MEDMM_CHECKPOINT`` name another one."""
    import site
    import sys
    import sysconfig

    env = os.environ.get(CHECKPOINT_ENV)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "checkpoints" / "default"
    if (checkout / META_FILE).is_file():
        return checkout
    for prefix in (sysconfig.get_path("data"), sys.prefix, getattr(site, "USER_BASE", None)):
        installed = Path(prefix or "") / "share" / "medmm" / "checkpoints" / "default"
        if prefix and (installed / META_FILE).is_file():
            return installed
    return checkout   # the error then names the folder that should hold it


DEFAULT_CHECKPOINT = default_checkpoint()


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, tampered with, or does not match the expected findings."""


@dataclass
class OODReference:
    """PCA-Mahalanobis reference of training image embeddings: distance above ``threshold`` -> warn."""

    mean: np.ndarray          # [F]
    components: np.ndarray    # [K, F] principal axes
    variances: np.ndarray     # [K]
    threshold: float

    def score(self, emb: np.ndarray) -> np.ndarray:
        """Mahalanobis distance in the top-K principal subspace plus the residual norm scaled by the smallest variance."""
        x = np.atleast_2d(emb) - self.mean
        proj = x @ self.components.T                         # [N, K]
        resid = x - proj @ self.components                   # [N, F]
        d2 = (proj ** 2 / self.variances).sum(1) + (resid ** 2).sum(1) / self.variances.min()
        return np.sqrt(d2 / (self.components.shape[0] + 1))

    @classmethod
    def fit(cls, embeddings: np.ndarray, k: int = 32, quantile: float = 0.995) -> "OODReference":
        mean = embeddings.mean(0)
        x = embeddings - mean
        _, s, vt = np.linalg.svd(x, full_matrices=False)
        k = min(k, vt.shape[0])
        variances = (s[:k] ** 2) / max(len(x) - 1, 1) + 1e-6
        ref = cls(mean.astype(np.float32), vt[:k].astype(np.float32), variances.astype(np.float32), 0.0)
        ref.threshold = float(np.quantile(ref.score(embeddings), quantile))
        return ref


@dataclass
class ScopeCheck:
    """Is this an adult film? Logistic regression on the image embedding (pediatric Kermany vs the adult sources).

    The default model is trained mostly on children and is measurably weaker on adults; the pipeline says so on
    adult films, quoting ``adult_auc``. ``rates``: how often it fires per training source (grouped CV).
    """

    weight: np.ndarray        # [F]
    bias: float
    rates: dict[str, float] = field(default_factory=dict)
    adult_auc: dict[str, Any] | None = None

    def p_adult(self, emb: np.ndarray) -> np.ndarray:
        z = np.atleast_2d(emb).astype(np.float64) @ self.weight.astype(np.float64) + self.bias
        return 1 / (1 + np.exp(-z))

    @classmethod
    def constant(cls, dim: int, adult: bool) -> "ScopeCheck":
        return cls(np.zeros(dim, np.float32), 20.0 if adult else -20.0)

    def to_dict(self) -> dict[str, Any]:
        return {"rates": self.rates, "adult_auc": self.adult_auc}


@dataclass
class CheckpointMeta:
    model: ModelConfig
    preprocessing: Preprocessing
    findings: tuple[str, ...]
    temperatures: dict[str, float]
    thresholds: dict[str, float]
    trained: bool
    name: str = "medmm"
    operating_point: str = "Youden's J on out-of-fold predictions"
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    ood_threshold: float | None = None
    scope: dict[str, Any] = field(default_factory=dict)
    notes_expert: dict[str, Any] | None = None
    medmm_version: str = __version__
    format_version: int = FORMAT_VERSION
    weights_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version, "medmm_version": self.medmm_version, "name": self.name,
            "trained": self.trained, "findings": list(self.findings), "model": self.model.to_dict(),
            "preprocessing": self.preprocessing.to_dict(), "temperatures": self.temperatures,
            "thresholds": self.thresholds, "operating_point": self.operating_point,
            "ood_threshold": self.ood_threshold, "scope": self.scope, "notes_expert": self.notes_expert, "training": self.training, "metrics": self.metrics,
            "weights_sha256": self.weights_sha256,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CheckpointMeta":
        if d.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"unsupported checkpoint format_version {d.get('format_version')!r}")
        findings = tuple(d["findings"])
        for key in ("temperatures", "thresholds"):
            if set(d[key]) != set(findings):
                raise CheckpointError(f"checkpoint {key} do not cover exactly its findings")
        return cls(
            model=ModelConfig.from_dict(d["model"]), preprocessing=Preprocessing.from_dict(d["preprocessing"]),
            findings=findings, temperatures={k: float(v) for k, v in d["temperatures"].items()},
            thresholds={k: float(v) for k, v in d["thresholds"].items()}, trained=bool(d["trained"]),
            name=d.get("name", "medmm"), operating_point=d.get("operating_point", ""),
            training=d.get("training", {}), metrics=d.get("metrics", {}), ood_threshold=d.get("ood_threshold"),
            scope=d.get("scope", {}), notes_expert=d.get("notes_expert"),
            medmm_version=d.get("medmm_version", "?"), format_version=d["format_version"],
            weights_sha256=d["weights_sha256"],
        )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stored_state(model: "torch.nn.Module") -> "dict[str, torch.Tensor]":
    """Everything but the frozen text encoder, which comes from its own wheel/path."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not k.startswith("text_encoder.")}


def save_checkpoint(folder: str | Path, model: "torch.nn.Module", meta: CheckpointMeta,
                    ood: OODReference | None = None, scope: ScopeCheck | None = None) -> Path:
    """Write weights + metadata atomically enough for our use (weights first, JSON last)."""
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if len(meta.findings) != model.cfg.num_findings:
        raise CheckpointError("findings length does not match the model head")
    tensors = _stored_state(model)
    if ood is not None:
        tensors.update({"ood.mean": torch.from_numpy(ood.mean), "ood.components": torch.from_numpy(ood.components),
                        "ood.variances": torch.from_numpy(ood.variances)})
        meta.ood_threshold = ood.threshold
    if scope is not None:
        tensors.update({"scope.weight": torch.from_numpy(np.asarray(scope.weight, np.float32)),
                        "scope.bias": torch.tensor([scope.bias], dtype=torch.float32)})
        meta.scope = scope.to_dict()
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"findings": json.dumps(list(meta.findings))})
    meta.weights_sha256 = sha256_file(folder / WEIGHTS_FILE)
    (folder / META_FILE).write_text(json.dumps(meta.to_dict(), indent=2) + "\n")
    return folder


def read_meta(folder: str | Path) -> CheckpointMeta:
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise CheckpointError(f"no {META_FILE} in {folder}")
    try:
        return CheckpointMeta.from_dict(json.loads(path.read_text()))
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a valid medmm checkpoint description: {e}") from None


REFERENCE_PREFIXES = ("ood.", "scope.")   # tensors of the weights file that are no model weights


def _checked_weights(folder: Path, expected_findings: tuple[str, ...] | None) -> tuple[CheckpointMeta, Path]:
    """The checkpoint's metadata and weights file, after checking the file's sha256 and the findings order."""
    meta = read_meta(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"no {WEIGHTS_FILE} in {folder}")
    if sha256_file(weights) != meta.weights_sha256:
        raise CheckpointError(f"{weights} does not match the sha256 recorded in {META_FILE} (corrupt or modified)")
    if expected_findings is not None and tuple(expected_findings) != meta.findings:
        raise CheckpointError(f"checkpoint findings {meta.findings} differ from the expected {tuple(expected_findings)}")
    return meta, weights


def _check_stored_findings(f: Any, meta: CheckpointMeta) -> None:
    stored_findings = tuple(json.loads((f.metadata() or {}).get("findings", "[]")))
    if stored_findings != meta.findings:
        raise CheckpointError("findings in the weights file and in the JSON disagree")


def _references(arrays: Mapping[str, np.ndarray], meta: CheckpointMeta) -> tuple[OODReference | None, ScopeCheck | None]:
    """The out-of-distribution reference and the scope check from the weights file's ``ood.*`` / ``scope.*``."""
    ood = None
    if "ood.mean" in arrays:
        ood = OODReference(arrays["ood.mean"], arrays["ood.components"], arrays["ood.variances"],
                           float(meta.ood_threshold))
    scope = None
    if "scope.weight" in arrays:
        scope = ScopeCheck(arrays["scope.weight"], float(arrays["scope.bias"][0]), dict(meta.scope.get("rates") or {}),
                           meta.scope.get("adult_auc"))
    return ood, scope


def load_references(folder: str | Path = DEFAULT_CHECKPOINT, *,
                    expected_findings: tuple[str, ...] | None = FINDINGS
                    ) -> tuple[CheckpointMeta, OODReference | None, ScopeCheck | None]:
    """``(meta, ood, scope)`` without torch: the checks of ``load_checkpoint`` (sha256, findings), then only the
    reference arrays of the weights file (the torch-free path runs the model's weights as cached graphs)."""
    from safetensors import safe_open

    meta, weights = _checked_weights(Path(folder), expected_findings)
    with safe_open(str(weights), framework="numpy") as f:
        _check_stored_findings(f, meta)
        arrays = {k: f.get_tensor(k) for k in f.keys() if k.startswith(REFERENCE_PREFIXES)}
    return (meta, *_references(arrays, meta))


def load_checkpoint(folder: str | Path = DEFAULT_CHECKPOINT, *, expected_findings: tuple[str, ...] | None = FINDINGS,
                    device: str = "cpu"):
    """Return ``(model, meta, ood)``. Verifies the weights' sha256 and the findings order.

    ``expected_findings=None`` accepts the checkpoint's own findings (the caller must then use ``meta.findings``).
    """
    import torch
    from safetensors import safe_open

    from medmm.models.model import create_model

    meta, weights = _checked_weights(Path(folder), expected_findings)
    with safe_open(str(weights), framework="pt", device="cpu") as f:
        _check_stored_findings(f, meta)
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    ood, scope = _references({k: tensors.pop(k).numpy() for k in list(tensors) if k.startswith(REFERENCE_PREFIXES)},
                             meta)
    model = create_model(meta.model, pretrained=False)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.startswith("text_encoder.")]
    if "expert_weight" in missing:  # saved before the residual notes expert existed: the expert enters as a feature only
        with torch.no_grad():
            model.expert_weight.zero_()
        missing.remove("expert_weight")
    if missing or unexpected:
        raise CheckpointError(f"weights do not fit the architecture (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.to(device).eval()
    model.scope = scope  # plain attribute (not a module): read by the pipeline
    if meta.model.notes_expert and meta.notes_expert:  # trained without labelled notes: the expert feature stays 0
        from medmm.models.notes_expert import NotesExpert

        model.notes_expert = NotesExpert.from_dict(meta.notes_expert)
    return model, meta, ood
