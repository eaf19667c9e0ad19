# The default detector (DCN Faster R-CNN R50) made narrow for CPU tests and the demo: mmdet's ResNet
# takes base/stem channels, so every stage is 1/8 as wide; 128 px input; DCN kept in the last stage
# only (on CPU it doubles a step's cost in every stage); fewer RoIs per image. Not a Kaggle config.
_base_ = './faster_rcnn_r50_dcn.py'
_w = 8  # base width (mmdet's default 64); stage outputs are 4 * _w * 2**i
model = dict(
    backbone=dict(base_channels=_w, stem_channels=_w, stage_with_dcn=(False, False, False, True), init_cfg=None),
    neck=dict(in_channels=[4 * _w, 8 * _w, 16 * _w, 32 * _w], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, fc_out_channels=64)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=200), rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100)),
)
# weights=None: a narrow net trains from random init (its mmdet base's COCO checkpoint would not fit)
siim = dict(size=128, workers=0, score_scale=1.0, predict_batch=16, weights=None)
train_dataloader = dict(batch_size=8, num_workers=0)
train_cfg = dict(max_epochs=8)
optim_wrapper = dict(optimizer=dict(lr=0.02))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=8, T_max=8, eta_min_ratio=0.01,
         convert_to_iter_based=True),
]
