"""Annotated types for constructor signatures.

The keyword annotations of our models, datamodules and corruptions double as the config schema:
`aelab.validation` checks each config value against them before anything is built, and words its one-line error from
the constraints (`hidden: PositiveInt` -> "expected an integer >= 1"). So a constraint written here once is both
documentation and a check; constructors still `check()` what no annotation can say (relations between arguments).
"""

from typing import Annotated

from annotated_types import Ge, Gt, Lt

PositiveInt = Annotated[int, Ge(1)]
NonNegativeInt = Annotated[int, Ge(0)]
PositiveFloat = Annotated[float, Gt(0)]
NonNegativeFloat = Annotated[float, Ge(0)]
Fraction = Annotated[float, Gt(0), Lt(1)]  # open interval: a share of something that is neither none nor all

__all__ = ["PositiveInt", "NonNegativeInt", "PositiveFloat", "NonNegativeFloat", "Fraction"]
