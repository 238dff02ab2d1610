"""Data: ``scan`` folder layouts into manifests, ``splits`` of a manifest, ``decode`` any file once, ``images``
(the model's square, the uint8 set), ``batches`` (tf.data), synthetic ``phantom`` films with lesion masks, planted
``confounders``, synthetic film ``shifts``, and ``stream``ed evaluation of large sets."""
from .batches import augment_batch, augmenter, encode_labels, label_array, make_dataset, to_model_input  # noqa: F401
from .decode import MAX_PIXELS, ImageReadError, decode_image, is_dicom, read_gray  # noqa: F401
from .images import GEOMETRIES, ImageSet, equalize, fit_size, load_image, load_images  # noqa: F401
from .scan import (  # noqa: F401
    IMAGE_EXTENSIONS,
    LAYOUT,
    MASK_CLASSES,
    NIH_COLUMNS,
    NIH_FINDINGS,
    SPLITS,
    SUBTYPE_CLASSES,
    DatasetLayoutError,
    apply_subtypes,
    detect_classes,
    find_data_root,
    has_split_folders,
    is_mask_file,
    manifest_frame,
    mask_beside,
    parse_kermany_name,
    scan_dataset,
    scan_labels_csv,
    scan_mask_folders,
)
from .splits import (  # noqa: F401
    class_weights,
    holdout_split,
    kfold_splits,
    limit_train,
    patient_split,
    require_splits,
    select_validation,
)
