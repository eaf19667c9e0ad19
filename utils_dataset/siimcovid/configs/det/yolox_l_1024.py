# YOLOX-L, one class, at 1024 px: the one-stage family beside the two-stage R-CNNs (the top teams fused
# YOLO-class detectors at 512-1024 px with Faster / Cascade R-CNN; 1024 keeps the small opacities that a
# 640 px input loses on 2500-3000 px radiographs). COCO-pretrained on Kaggle (siim.weights='auto').
_base_ = 'mmdet::yolox/yolox_l_8xb8-300e_coco.py'
model = dict(
    # mmdet's BatchSyncRandomResize resizes each batch to a random 480-800 px: our pipelines feed one fixed size
    data_preprocessor=dict(batch_augments=None),
    bbox_head=dict(num_classes=1),
    test_cfg=dict(score_thr=0.001, max_per_img=50),
)
siim = dict(size=1024)
train_dataloader = dict(batch_size=4)
train_cfg = dict(max_epochs=20)
# mmdet's YOLOX hooks assume its own Mosaic / MixUp dataset (the mode switch swaps in YOLOX's pipeline and
# size for the last epochs) and its EMA is not what model.pth exports: neither is kept.
custom_hooks = []
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='SGD', lr=0.005, momentum=0.9, weight_decay=5e-4, nesterov=True),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
