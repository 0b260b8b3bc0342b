"""After training: was a trained adapter's rank enough? Sufficiency evidence measured on its data (the held-out
check and loss trend of :mod:`~lowrank.advice.sufficiency.trained_point`, the probe's continuations at r, 2r and r/2,
the gradient outside the adapter's reach) and the one place the rank verdict is decided
(:mod:`~lowrank.advice.sufficiency.verdict`)."""
