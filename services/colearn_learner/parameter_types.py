"""Parameter types for plugin signatures: the registry enforces them on a client's JSON in ``MLSetup``.

Using them keeps bad values (a negative seed, a learning rate of 0) at ``INVALID_ARGUMENT`` instead of a
crash deep inside a framework.

A family whose data or memory calls for another bound than a type's gives its own on top of it, e.g.
``batch_size: Annotated[BatchSize, Field(le=4096)] = 8``: pydantic enforces the last bound given.
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
#: A finite float of at least zero, e.g. a regularisation strength.
NonNegativeFloat = Annotated[float, Field(ge=0)]
#: A learning rate. No optimizer converges above 1,000, and torch's fail outright near float32's limit, which
#: would turn a client's typo into an INTERNAL error in ProposeWeights.
LearningRate = Annotated[float, Field(gt=0, le=1000)]
#: A share of a layer's units that dropout zeroes while training: 1 would zero them all.
DropoutRate = Annotated[float, Field(ge=0, lt=1)]

#: A whole number of at least one, with no upper bound (examples, batches, passes, units).
Count = Annotated[int, Field(ge=1)]
#: Examples in one batch.
BatchSize = Annotated[Count, Field(le=65_536)]
#: Batches trained per proposal, or batches of the vote (or test) split that a score looks at.
Steps = Annotated[Count, Field(le=100_000)]
#: Passes over the training split per proposal.
Epochs = Annotated[Count, Field(le=100)]
#: Units of a hidden layer.
HiddenUnits = Annotated[Count, Field(le=4096)]
