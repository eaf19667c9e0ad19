# RetinaNet R50 (from the seed's wider menu), one class.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
model = dict(bbox_head=dict(num_classes=1), test_cfg=dict(score_thr=0.001, max_per_img=50))
