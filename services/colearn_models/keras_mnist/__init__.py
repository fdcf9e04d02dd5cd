"""KERAS_MNIST: 28x28 greyscale digits (or Fashion-MNIST, the same format) from ``colearn-data split``.

Needs the ``keras`` extra (``pip install 'colearn-fleet[keras]'``).
``data_tool`` splits the dataset's original files into learner folders (``colearn-data split``) and
writes small fixtures in the same format.
"""

from colearn_models.keras_mnist import data_tool  # registers the family's data tool
from colearn_models.keras_mnist.models import registry

__all__ = ["data_tool", "registry"]
