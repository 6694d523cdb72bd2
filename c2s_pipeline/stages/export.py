"""Stage `export`: a run's student as one ONNX graph (c2s_pipeline.engines.export does the work)."""

from c2s_pipeline.engines.export import export_run as run

__all__ = ["run"]
