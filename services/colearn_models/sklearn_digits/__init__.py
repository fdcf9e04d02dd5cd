"""SKLEARN_DIGITS: a linear SGD classifier on DIGITS, light enough for any laptop and the demo.

Needs the ``sklearn`` extra (``pip install 'colearn-fleet[sklearn]'``).
"""

from colearn_models.sklearn_digits.models import registry

__all__ = ["registry"]
