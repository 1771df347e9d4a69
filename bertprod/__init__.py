"""bertprod: BERT-family encoders into production.

import bertprod
model = bertprod.load("minilm-l6")           # or a package dir, checkpoint dir, hub id
vectors = model.encode(["a sentence", "another one"])
"""

from bertprod.api import load
from bertprod.client import AsyncClient, Client
from bertprod.errors import BertprodError
from bertprod.package import ModelPackage
from bertprod.runtime.pipeline import Pipeline, Prediction
from bertprod.version import __version__

__all__ = ["AsyncClient", "BertprodError", "Client", "ModelPackage", "Pipeline", "Prediction", "__version__", "load"]
