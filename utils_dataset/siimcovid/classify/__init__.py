"""The shared Keras classifier core every image-classification stage trains through.

A stage is a :class:`task.Task` (output columns, activation, targets, loss, validation metric)
plus a config dataclass extending :class:`config.ClassifierConfig`; then

    from siimcovid.classify.train import train_fold      # resumable fit loop -> fold folder
    from siimcovid.classify.predict import predict_frame  # a frame of images -> columns (+ hflip TTA)
    from siimcovid.classify.backbones import build_model, MODELS, KERAS_BACKBONES, HUB_HANDLES

Modules: config, backbones (registry + builders), heads (class head, aux-seg decoders), data
(meta reader, tf.data + augmentation), runtime (tf_keras, strategy, precision), train, predict,
task. TensorFlow is imported inside functions only.
"""
