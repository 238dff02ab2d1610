"""Data: ``scan`` folder layouts into manifests and splits, ``images`` (decode once, tf.data), synthetic
``phantom`` films with lesion masks, planted ``confounders``, and ``stream``ed evaluation of large sets."""
from .images import (  # noqa: F401
    MAX_PIXELS, ImageReadError, is_dicom, decode_image, read_gray, GEOMETRIES, fit_size, load_image, ImageSet,
    load_images, to_model_input, augmenter, augment_batch, label_array, encode_labels, make_dataset,
)
from .scan import (  # noqa: F401
    IMAGE_EXTENSIONS, SPLITS, LAYOUT, DatasetLayoutError, is_mask_file, mask_beside, patient_split,
    parse_kermany_name, NIH_FINDINGS, NIH_COLUMNS, scan_labels_csv, detect_classes, scan_dataset,
    manifest_frame, SUBTYPE_CLASSES, apply_subtypes, MASK_CLASSES, scan_mask_folders, has_split_folders, find_data_root,
    require_splits, limit_train, holdout_split, kfold_splits, select_validation, class_weights,
)
