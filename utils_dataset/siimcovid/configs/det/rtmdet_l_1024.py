# RTMDet-L, one class, at 1024 px (the one-stage family; see yolox_l_1024.py for the size).
_base_ = 'mmdet::rtmdet/rtmdet_l_8xb32-300e_coco.py'
model = dict(bbox_head=dict(num_classes=1), test_cfg=dict(score_thr=0.001, max_per_img=50))
siim = dict(size=1024)
train_dataloader = dict(batch_size=4)
train_cfg = dict(max_epochs=20)
# mmdet's EMA and its PipelineSwitchHook (which swaps in RTMDet's own stage-2 pipeline and size) are left out
custom_hooks = []
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.001, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0, bias_decay_mult=0, bypass_duplicate=True),
    clip_grad=None)
