"""Names of the network's layers and other constants of its architecture, in one place.

Plain strings, importable without Keras or TensorFlow: the serving path (LiteRT), the gate,
the explainer and the trainer all address the same layers by these names.
"""

from __future__ import annotations

INPUT_NAME = "pixels"  # the model input: raw 0-255 RGB, (n, S, S, 3) float32
PREPROCESS_LAYER = "preprocess"
CAM_LAYER = "conv5_block3_out"  # the last conv block: where Grad-CAM looks
ENSEMBLE_CAM_LAYER = "conv5_ensemble_out"  # an ensemble's conv5 maps side by side (`pneumo.ensemble`)
FEATURES_LAYER = "avg_pool"  # global average pooling of the CAM layer
DROPOUT_LAYER = "dropout"
LOGIT_LAYER = "logit"  # one dense unit, the pre-sigmoid score
OUTPUT_LAYER = "probability"  # sigmoid of the logit
HEAD_LAYERS = (FEATURES_LAYER, DROPOUT_LAYER, LOGIT_LAYER, OUTPUT_LAYER)
GATE_STAGE_PREFIX = "conv4_"  # the population gate reads the last block output of this stage
DEFAULT_IMAGE_SIZE = 224
