"""FRAUD: card-fraud detection on the IEEE-CIS transactions, with a linear SGD classifier.

Needs the ``sklearn`` extra (``pip install 'colearn-fleet[sklearn]'``).
``data_tool`` splits the dataset's original files into learner folders (``colearn-data split``) and
writes small fixtures in the same format.
"""

from colearn_models.fraud import data_tool  # registers the family's data tool
from colearn_models.fraud.models import registry

__all__ = ["data_tool", "registry"]
