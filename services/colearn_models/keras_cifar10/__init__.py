"""KERAS_CIFAR10: 32x32 colour images in 10 classes, from the CIFAR-10 binary batches via ``colearn-data``.

Needs the ``keras`` extra (``pip install 'colearn-fleet[keras]'``).
``data_tool`` splits the dataset's original files into learner folders (``colearn-data split``) and
writes small fixtures in the same format.
"""

from colearn_models.keras_cifar10 import data_tool  # registers the family's data tool
from colearn_models.keras_cifar10.models import registry

__all__ = ["data_tool", "registry"]
