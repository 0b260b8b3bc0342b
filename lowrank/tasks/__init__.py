"""Tasks: model + data -> what is learned. Images (an MLP, lowrank.tasks.images), language modelling or sequence
classification (lowrank.tasks.kind), the modules a task trains (lowrank.tasks.modules), its loss
(lowrank.tasks.loss) and held-out evaluation (lowrank.tasks.evaluate); asked by training, advice, compress,
analysis and intrinsic alike."""
