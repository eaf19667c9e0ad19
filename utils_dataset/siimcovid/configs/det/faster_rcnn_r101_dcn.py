# DCN Faster R-CNN R101, one class.
_base_ = 'mmdet::dcn/faster-rcnn_r101-dconv-c3-c5_fpn_1x_coco.py'
model = dict(
    roi_head=dict(bbox_head=dict(num_classes=1)),
    test_cfg=dict(rcnn=dict(score_thr=0.001, max_per_img=50)),
)
siim = dict(score_scale=0.78)
