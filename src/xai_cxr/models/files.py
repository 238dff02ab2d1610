"""The names of the files in a trained model's folder, in one place (``ModelFolder`` in ``models/folder.py`` reads
them; the modules that write one of them import its name from here)."""

WEIGHTS = "model.weights.h5"          # the classifier's weights (weights only: nothing from disk is executed)
CARD = "model_config.json"            # ModelCard: what rebuilds and uses the weights
RUN_CONFIG = "run_config.json"        # the configs of the run that trained them (refits, audits, evaluation)
HISTORY = "history.json"              # per-epoch training history
CALIBRATION = "calibration.json"      # the fitted temperature
OOD = "ood.npz"                       # the out-of-distribution detector (models/ood.py)
INPUT_CHECK = "input_check.weights.h5"  # its input-level autoencoder (models/input_check.py)
SELECTIVE = "selective.json"          # the error-level rule: answer only above a confidence (models/selective.py)
