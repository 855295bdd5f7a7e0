"""Staged fine-tuning of the classifier, up to the exported model bundle.

Two ways to feed the network, same model and same stages:
- streaming (`train.cache_views: 0`): every batch is decoded, augmented with Albumentations in a
  tf.data pipeline and run through the whole network. Right on a GPU.
- cached (`train.cache_views: V`): layers below the deepest unfrozen stage never change, so
  their output is computed once for V views of each training image (view 0 clean, views 1..V-1
  augmented) and the trainable top is trained on it. On a 2-core CPU without bfloat16 this turns
  a 45 min/epoch full pass into minutes; the network and its weights are the same.
Every stage checkpoints each epoch (`--resume` continues after a kill) and keeps its best
epoch by validation AUC.

One job a module: `run` (orchestration: split, stages, readout, bundle, export), `callbacks`
(resumable history, best weights, atomic backups), `cache` (the conv-feature cache). The names below are
re-exported so `from pneumo.training import train` keeps working.
"""

from .cache import CachedViews, build_cache, cache_boundary
from .callbacks import AtomicBackup, BestWeights, EpochRecorder, WeightAverage
from .run import WORK, compile_for_stage, make_strategy, prepare_split, run_stages, train

__all__ = ["train", "prepare_split", "make_strategy", "compile_for_stage", "run_stages", "WORK",
           "EpochRecorder", "BestWeights", "WeightAverage", "AtomicBackup", "CachedViews",
           "build_cache", "cache_boundary"]
