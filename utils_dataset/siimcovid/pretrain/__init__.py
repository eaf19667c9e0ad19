"""Pre-training stages: a detector on external boxes (pretrain-det) and a multi-label classifier on
external labels (pretrain-cls), whose weights start the competition's folds (``init_from``)."""
