"""The binary `none` task (issue #8): per image, P(no opacity), as a second task on the shared
classifier core.

Modules: labels (targets, which images train), config (a member's config; ``ensemble.yaml``: the
members), task, train (`binary-train`), predict (the inference kernel's predictor). Merging the
members (`binary-merge`) is the ensemble's: siimcovid.ensemble.binary_merge. TensorFlow is imported
inside functions only.
"""
