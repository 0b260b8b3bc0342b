"""lowrank inside training frameworks, through :mod:`lowrank.api` only: :mod:`lowrank.integrations.transformers`
holds the ``RankCallback`` of a transformers (or TRL) Trainer. Any other loop logs ``lowrank.RankLogs(model)``."""
