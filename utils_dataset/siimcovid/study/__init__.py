"""Study-level classifier (issue #4): EfficientNetV2 (TF Hub) or sm FPN with an auxiliary box-mask
loss, fold training with resume and noisy-student rounds, hflip TTA and the out-of-fold merge.

Modules: config (defaults + YAML variants), dataset (tf.data + augmentation), model (builders,
tiny local SavedModel), train (fold training, `study-train`), evaluate (TTA, study aggregation,
merge, `study-merge`). TensorFlow is imported inside functions only.
"""
