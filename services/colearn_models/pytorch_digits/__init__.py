"""PYTORCH_DIGITS: a small torch MLP on DIGITS. torch is imported when this model is set up.

Needs the ``torch`` extra (``pip install 'colearn-fleet[torch]'``).
"""

from colearn_models.pytorch_digits.models import registry

__all__ = ["registry"]
