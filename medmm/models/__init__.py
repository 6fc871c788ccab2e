"""The model: backbones and encoders, the fusion model, preprocessing, the notes expert, checkpoints.

* ``encoders``: timm image encoder + backbone adapter (EfficientNet, DenseNet, ViT) and the text encoder.
* ``model``: gated fusion of the two modalities, bag-of-words notes path, state head (``MedMM``).
* ``transforms``: scan pixels -> model input tensor; training augmentation.
* ``notes_expert``: TF-IDF + logistic-regression notes expert (plain numbers in the checkpoint JSON; torch-free).
* ``checkpoint``: safetensors weights + ``medmm.json`` metadata, saved and loaded.

Names are re-exported lazily (``from medmm.models import create_model`` imports ``model`` on first use), so
importing this package, or a torch-free module of it, does not import torch.
"""

from medmm._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("DEFAULT_CHECKPOINT", "FORMAT_VERSION", "META_FILE", "WEIGHTS_FILE", "CheckpointError",
                     "CheckpointMeta", "OODReference", "ScopeCheck", "load_checkpoint", "read_meta", "save_checkpoint",
                     "sha256_file"), "checkpoint"),
    **dict.fromkeys(("BACKBONES", "Backbone", "ImageEncoder", "TextEncoder", "backbone_for", "default_text_encoder",
                     "embed_texts"), "encoders"),
    **dict.fromkeys(("resolve_text_encoder_path", "text_encoder_identity", "tokenizer_file"), "offline"),
    **dict.fromkeys(("BagOfWords", "GatedFusion", "MedMM", "StateHead", "create_model"), "model"),
    **dict.fromkeys(("NotesExpert", "cross_fitted_features"), "notes_expert"),
    **dict.fromkeys(("radiograph_augment", "to_model_input"), "transforms"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
