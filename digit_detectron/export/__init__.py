"""Export to TorchScript / ONNX (``exporter``) and the detectron2-free runtime written beside the model."""

from .exporter import EXPORT_FORMATS, ExportError, compare_with_pytorch, export_model, model_metadata

__all__ = ["EXPORT_FORMATS", "ExportError", "compare_with_pytorch", "export_model", "model_metadata"]
