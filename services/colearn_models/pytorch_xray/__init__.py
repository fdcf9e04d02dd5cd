"""PYTORCH_XRAY: pneumonia or not, from chest X-ray JPEGs, with a small torch CNN.

Needs the ``torch`` extra (``pip install 'colearn-fleet[torch]'``).
``data_tool`` splits the dataset's original files into learner folders (``colearn-data split``) and
writes small fixtures in the same format.
"""

from colearn_models.pytorch_xray import data_tool  # registers the family's data tool
from colearn_models.pytorch_xray.models import registry

__all__ = ["data_tool", "registry"]
