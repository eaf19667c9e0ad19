# The default detector (DCN Faster R-CNN R50) made narrow for CPU tests and the demo: mmdet's ResNet
# takes base/stem channels, so every stage is 1/8 as wide; 128 px input. Not a Kaggle config.
_base_ = './faster_rcnn_r50_dcn.py'
_w = 8  # base width (mmdet's default 64); stage outputs are 4 * _w * 2**i
model = dict(
    backbone=dict(base_channels=_w, stem_channels=_w, init_cfg=None),
    neck=dict(in_channels=[4 * _w, 8 * _w, 16 * _w, 32 * _w], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, fc_out_channels=64)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=200)),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100)),
)
siim = dict(size=128, workers=0, score_scale=1.0)
train_dataloader = dict(batch_size=8, num_workers=0)
train_cfg = dict(max_epochs=12)
optim_wrapper = dict(optimizer=dict(lr=0.02))
