# The one-stage family made small for CPU tests and the tiny run: RTMDet-tiny (mmdet's own smallest RTMDet)
# at 128 px from random init. Not a Kaggle config.
_base_ = 'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py'
model = dict(bbox_head=dict(num_classes=1), test_cfg=dict(score_thr=0.001, max_per_img=50))
siim = dict(size=128, workers=0, predict_batch=16, weights=None)
train_dataloader = dict(batch_size=8, num_workers=0)
train_cfg = dict(max_epochs=8)
custom_hooks = []
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=0.004, weight_decay=0.05), clip_grad=None)
