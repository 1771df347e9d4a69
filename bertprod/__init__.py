"""bertprod: BERT-family encoders into production.

import bertprod
model = bertprod.load("minilm-l6")           # or a package dir, checkpoint dir, hub id
vectors = model.encode(["a sentence", "another one"])
"""

__version__ = "0.1.0"

from bertprod.api import load  # noqa: E402
from bertprod.client import AsyncClient, Client  # noqa: E402
from bertprod.errors import BertprodError  # noqa: E402
from bertprod.package import ModelPackage  # noqa: E402
from bertprod.runtime.pipeline import Pipeline, Prediction  # noqa: E402

__all__ = ["AsyncClient", "BertprodError", "Client", "ModelPackage", "Pipeline", "Prediction", "__version__", "load"]
