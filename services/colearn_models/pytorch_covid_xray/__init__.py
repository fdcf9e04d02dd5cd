"""PYTORCH_COVID_XRAY: COVID-19, normal or other pneumonia, from 64 features per chest X-ray, with an MLP.

Needs the ``torch`` extra (``pip install 'colearn-fleet[torch]'``).
``data_tool`` splits the dataset's original files into learner folders (``colearn-data split``) and
writes small fixtures in the same format.
"""

from colearn_models.pytorch_covid_xray import data_tool  # registers the family's data tool
from colearn_models.pytorch_covid_xray.models import registry

__all__ = ["data_tool", "registry"]
