"""The ensembling stage: every trained member into one merge fitted on out-of-fold predictions.

- rules.py   the merge itself (study rows from study members, image rows from detector members
             fused through siimcovid/wbf plus binary / study evidence), with named presets
- fit.py     rule parameters and member weights fitted on OOF predictions, saved as JSON
- members.py finding and reading the members' fold outputs (study, binary, detector)
- config.py  which members take part and with which weights: one config variant
- report.py  ``python -m siimcovid cv-report``: the local score per member and per rule, HTML + PNGs
- budget.py  time per image per member -> projected time for the hidden test set vs the 9-hour limit
- study_merge.py, binary_merge.py, det_merge.py  the ``study-merge``, ``binary-merge`` and
             ``det-merge`` commands: one kind's members through these same parts, with that
             kind's figures (a stage's folds are merged here, not in the stage)

The APs are ``siimcovid.scoring``'s (the core's one scorer), the tables ``siimcovid.tables``'.
"""
