"""DICOM -> PNG/TFRecords: the preprocess stage (dicom decoding, conversion, TFRecords)."""
