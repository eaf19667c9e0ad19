"""Study-level classifier (issue #4) as a task of the shared core (:mod:`siimcovid.classify`):
EfficientNetV2 (TF Hub), an sm FPN or a keras.applications body with the auxiliary box-mask loss,
fold training with resume and noisy-student rounds, hflip TTA.

Modules: config (StudyConfig over ClassifierConfig; variants in configs/study/), task (classes,
fold split, targets, study mAP), teacher (noisy-student targets), train (`study-train`), evaluate
(study aggregation, metric), predict (the inference kernel's study predictor). The input pipeline
and the model builder are the core's (:mod:`siimcovid.classify`); the fold merge (`study-merge`) is
the ensemble's (siimcovid.ensemble.study_merge). TensorFlow is imported inside functions only.
"""
