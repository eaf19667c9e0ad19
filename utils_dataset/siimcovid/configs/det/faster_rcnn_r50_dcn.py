# Default detector: the seed's DCN Faster R-CNN R50, one class.
_base_ = 'mmdet::dcn/faster-rcnn_r50-dconv-c3-c5_fpn_1x_coco.py'
model = dict(
    roi_head=dict(bbox_head=dict(num_classes=1)),
    # keep low-score boxes: AP rewards them and WBF needs them
    test_cfg=dict(rcnn=dict(score_thr=0.001, max_per_img=50)),
)
siim = dict(score_scale=0.78)  # the 1st place scaled Faster R-CNN scores by 0.78 to match its other detectors
