"""What a data folder must look like, in one place: the expected layout (shown in every layout error) and the
error itself."""

LAYOUT = """expected layout (folder names are case-insensitive):
  {root}/
    train/NORMAL/*.jpeg   train/PNEUMONIA/*.jpeg
    val/NORMAL/*.jpeg     val/PNEUMONIA/*.jpeg     (optional)
    test/NORMAL/*.jpeg    test/PNEUMONIA/*.jpeg
Download "Chest X-Ray Images (Pneumonia)" from Kaggle into {root}/ (see chest_xray/README.md),
or run `xai-cxr demo` to use generated phantoms."""


class DatasetLayoutError(ValueError):
    """The data folder does not have the expected split/class layout."""
