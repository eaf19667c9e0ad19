# DCN Cascade R-CNN R50, one class. mmdet's base holds a LIST of three bbox heads and a dict
# override cannot reach into a list, so the list is restated here (stds as in mmdet's cascade base).
_base_ = 'mmdet::dcn/cascade-rcnn_r50-dconv-c3-c5_fpn_1x_coco.py'


def _head(stds):
    return dict(
        type='Shared2FCBBoxHead', in_channels=256, fc_out_channels=1024, roi_feat_size=7, num_classes=1,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=stds),
        reg_class_agnostic=True,
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))


model = dict(
    roi_head=dict(bbox_head=[_head([0.1, 0.1, 0.2, 0.2]), _head([0.05, 0.05, 0.1, 0.1]),
                             _head([0.033, 0.033, 0.067, 0.067])]),
    test_cfg=dict(rcnn=dict(score_thr=0.001, max_per_img=50)),
)
siim = dict(score_scale=0.78)
