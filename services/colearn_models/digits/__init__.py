"""DIGITS: scikit-learn's embedded 8x8 digits, sharded across learners. Needs no files at all.

Needs the ``sklearn`` extra (``pip install 'colearn-fleet[sklearn]'``).
"""

from colearn_models.digits.models import registry

__all__ = ["registry"]
