"""Parameter types for plugin signatures: the registry enforces them on a client's JSON in ``MLSetup``.

Using them keeps bad values (a negative seed, a learning rate of 0) at ``INVALID_ARGUMENT`` instead of a
crash deep inside a framework.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

#: A random seed every framework accepts (numpy's default_rng, torch.manual_seed, scikit-learn).
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
#: A share of a dataset, strictly between 0 and 1.
Ratio = Annotated[float, Field(gt=0, lt=1)]
#: A finite float above zero, e.g. a learning rate (the registry refuses NaN and infinities everywhere).
PositiveFloat = Annotated[float, Field(gt=0)]
#: A learning rate. No optimizer converges above 1,000, and torch's fail outright near float32's limit, which
#: would turn a client's typo into an INTERNAL error in ProposeWeights.
LearningRate = Annotated[float, Field(gt=0, le=1000)]
