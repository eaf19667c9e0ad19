"""The binary `none` task (issue #8): per image, P(no opacity), as a second task on the shared
classifier core, and the ensemble of its members.

Modules: labels (targets, which images train), ensemble (OOF none AP through siimcovid.metric,
member weights fitted on it), merge (`binary-merge`). TensorFlow is imported inside functions only.
"""
