"""The exported model's on-disk contract: `<model_dir>/serving/` (a SavedModel and its
signatures), `labels.txt` and `preprocessing.json`.

tv-train writes it (trainer.serve.export); tv-predict and the batch prediction job read it
(beam_jobs.predict). Both take these names from here.
"""

SERVING_DIR = "serving"
LABELS_FILE = "labels.txt"
# The serving contract: serving_default(image_bytes) -> {probabilities, label}.
INPUT_NAME = "image_bytes"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_LABEL = "label"  # the predicted class name; a serving output, not the record field
FEATURES_SIGNATURE = "transfer_values"  # image_bytes → backbone output and head input
OUTPUT_TRANSFER_VALUES = "transfer_values"
OUTPUT_HEAD_INPUT = "head_input"
# For clients that decode themselves: pixels uint8 [N, H, W, 3] (one shape per call).
PIXELS_SIGNATURE = "serving_pixels"  # pixels → {probabilities, label}
FEATURES_PIXELS_SIGNATURE = "transfer_values_pixels"  # pixels → {transfer_values, head_input}
PIXELS_INPUT = "pixels"
# <model_dir>/preprocessing.json: what a pixel client must do before calling PIXELS_SIGNATURE.
PREPROCESSING_FILE = "preprocessing.json"
KEY_IMAGE_SIZE = "image_size"
KEY_RESIZE_POLICY = "resize_policy"
KEY_JPEG_FACTOR = "jpeg_dct_scaling_factor"
KEY_PIXELS_SIGNATURE = "pixels_signature"
KEY_PIXELS_INPUT = "pixels_input"
KEY_TTA = "tta"  # true: probabilities are the mean over the image and its left-right mirror
# Knowing when unsure (issue 23): every classifying signature of a new export also returns these;
# an export without them (made before) predicts as before, with no ood_score.
OUTPUT_OOD_SCORE = "ood_score"  # float32 [N]: higher = less like the training data
OUTPUT_IN_DISTRIBUTION = "in_distribution"  # bool [N]: ood_score <= the export's threshold
KEY_TEMPERATURE = "temperature"  # the served probabilities are softmax(logits / temperature)
KEY_OOD = "ood"  # the OOD description's method, threshold and size (absent: no ood_score)
