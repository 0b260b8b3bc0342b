"""What a run of each task starts from when not told otherwise: the learning rate by method and task, a new head's
rate, and LoRA's alpha (rates measured on Reuters R8: reports/training_reuters_r8.md; rank stability:
reports/rank_advice.md). ``lowrank train`` applies them; rank advice reads them for an adapter trained without
metrics.json."""

# LoRA classification at 5e-3 (alpha 8): no rank of 1..256 collapsed on four MiniLM tasks x 3 seeds, and each
# task's best rank matched or beat the best of a swept grid (reports/rank_advice.md, "The default learning rate").
DEFAULT_LR = {("lora", "classification"): 5e-3, ("lora", "lm"): 1e-3,
              ("full", "classification"): 5e-5, ("full", "lm"): 2e-5}
# A newly initialized classifier head learns at max(lr, this): at full fine-tuning's 5e-5 a fresh head is still
# under-trained after 3 epochs (MiniLM-L6 on R52: 83.6% full against 92.4% LoRA r=16, reports/rank_advice.md).
DEFAULT_HEAD_LR = 2e-3
# MLPs on images (lowrank.tasks.images), by method. The text rates are far too low there: full at 5e-5 barely
# moves a fresh network. Measured (held-out accuracy): full from scratch, mlp:784,200,200,10 on mnist-5k, 10 epochs
# of 32: 0.955 at 3e-3, 0.950 at 1e-2, 0.937 at 3e-2 (1e-2 wins only short runs); LoRA r=1/4 adapting a trained
# network to left-right mirrored mnist-5k, 3 epochs: 0.894/0.906 at 1e-2, 0.833/0.867 at 3e-3, 0.889/0.909 at 3e-2.
DEFAULT_IMAGE_LR = {"lora": 1e-2, "full": 3e-3}
# LoRA's alpha when not given: fixed, so that the scale s = alpha / r falls as 1/r. With Adam every entry of B and
# A moves by about lr a step, so the step of s B A, a sum of r such rank-1 terms, grows like s r: at alpha = r it
# grew with r, and the rate that suits r = 8 collapsed r >= 16 on real tasks; at a fixed alpha it is the same at
# every rank (the learning rate transfers across ranks), and at r = 8 it is the earlier default exactly.
DEFAULT_ALPHA = 8.0
