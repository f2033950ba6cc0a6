"""crossbit.encoders.training: data, the feature cache, losses, training, recipes and evaluation.

Serving never imports this package; ``crossbit train``/``evaluate`` and ``bench/`` do.
"""

from crossbit.encoders.training.checkpoint import save_checkpoint
from crossbit.encoders.training.feature_cache import FeatureSet
from crossbit.encoders.training.finetune import finetune
from crossbit.encoders.training.heads_fit import train_heads, train_teacher
from crossbit.encoders.training.options import TrainConfig, TrainResult
from crossbit.encoders.training.recipes import load_pairs, train_model, train_seeds

__all__ = ["FeatureSet", "TrainConfig", "TrainResult", "finetune", "load_pairs",
           "save_checkpoint", "train_heads", "train_model", "train_seeds", "train_teacher"]
