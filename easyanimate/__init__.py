__version__ = "0.1.0"

# `import easyanimate` registers EasyAnimateV1Pipeline with diffusers, so DiffusionPipeline.from_pretrained loads our folders (see nbs/08_pipeline.ipynb)
from .pipeline import EasyAnimateV1Pipeline, EasyAnimateV1PipelineOutput
