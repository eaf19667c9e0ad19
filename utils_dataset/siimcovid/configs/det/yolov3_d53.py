# YOLOv3 Darknet-53 (from the seed's wider menu), one class.
_base_ = 'mmdet::yolo/yolov3_d53_8xb8-ms-608-273e_coco.py'
model = dict(bbox_head=dict(num_classes=1), test_cfg=dict(score_thr=0.001, max_per_img=50))
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=0.0005),
                     clip_grad=dict(max_norm=35, norm_type=2))
