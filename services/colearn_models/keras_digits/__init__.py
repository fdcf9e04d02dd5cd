"""KERAS_DIGITS: a small Keras dense network on DIGITS, so that Keras too has a default needing no files.

Needs the ``keras`` extra (``pip install 'colearn-fleet[keras]'``).
"""

from colearn_models.keras_digits.models import registry

__all__ = ["registry"]
