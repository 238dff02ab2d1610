"""The end-to-end run the CLI and the notebook share: data → model → two-stage training → test evaluation →
calibration, operating point, out-of-distribution detector → Grad-CAM sample grid. One module per step, arrays in
and out; ``run`` wires them and does the file I/O.

- ``prepare``: scan, limit, validation, decoding, the task's class weights, datasets, sample picks, lesion masks.
- ``fit``: the concrete model config, the saved description, the two-stage fit.
- ``after_training``: test metrics, temperature, operating point, the detector and the error-level rule (and
  refitting both later).
- ``figures``: the sample grid and the phantom pointing game.
- ``run``: all of the above, in order.
"""
from .after_training import (  # noqa: F401
                             apply_operating_point,
                             calibrate,
                             evaluate_on_test,
                             fit_error_level,
                             fit_out_of_distribution,
                             refit_out_of_distribution,
)
from .figures import explain_images, lesion_pointing_game, sample_figure, save_figure  # noqa: F401
from .fit import fit, model_config_of, resolve_model, save_description  # noqa: F401
from .prepare import Prepared, datasets, has_split, lesion_masks, pick_samples, prepare_data, train_class_weights  # noqa: F401
from .run import print_summary, run  # noqa: F401
