# Project layer of every detector variant: our COCO files, one class, schedule, hooks, size.
# siimcovid.detect.config.load() puts it BETWEEN mmdet's config (the variant's `_base_`) and the
# variant file: each top-level key here replaces mmdet's, unless the variant file sets that key
# itself; `siim` is merged key by key. Paths, size and fold are filled in by
# siimcovid.detect.config.prepare() from the `siim` keys, so they are set in one place.
siim = dict(
    size=512,  # model input px; the preprocess output must hold images/<size>/ (and boxes_<size>)
    fold=0,
    preprocess=None,  # folder with meta.csv; None: searched under /kaggle/input
    empty_rate=0.0,  # share of box-less training images kept (0: excluded, as the 1st place did)
    weights='auto',  # 'auto': the COCO checkpoint of the variant's mmdet base from the weights kernel when mounted
                     # (Kaggle), else random init (local runs); a .pth path; None: random init
    init_from=None,  # 'pretrain-det': the pretrain-det kernel's weights of this variant (the graph sets it with
                     # the kernel source), or a .pth path; wins over `weights`
    backbone_weights=None,  # ImageNet backbone .pth (torchvision layout); None: random init
    tta=dict(hflip=True, vflip=False),  # flips fused with WBF (not mmdet's NMS-based TTA)
    wbf=dict(iou_thr=0.6, skip_box_thr=0.0001, conf_type='avg'),  # fusing the flips of one model
    score_scale=1.0,  # this variant's box scores are multiplied by this before the model-level WBF
    round=1,  # 2+: train on train + pseudo-labelled test (see `pseudo`)
    pseudo=None,  # pseudo_labels.csv of siimcovid.detect.pseudo (round >= 2)
    seed=42,
    amp='auto',  # mixed precision: 'auto' (on when CUDA is there), True, False
    workers=2,  # dataloader workers (0 on a tiny CPU run)
    predict_batch=8,
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(512, 512), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 512), keep_ratio=False),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type='CocoDataset',
        data_root='',
        ann_file='',  # <run>/coco/train.json, written by siimcovid.detect.coco
        data_prefix=dict(img=''),  # file names in the COCO file are absolute
        metainfo=dict(classes=('opacity',)),
        filter_cfg=dict(filter_empty_gt=False, min_size=1),  # empties are chosen by siim.empty_rate
        pipeline=train_pipeline,
    ),
)
# Validation is ours (siimcovid.detect.predict with the project metric), not mmdet's CocoMetric.
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
optim_wrapper = dict(
    type='OptimWrapper',  # AmpOptimWrapper on CUDA when siim.amp allows
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2),
)
# The cosine's end follows train_cfg.max_epochs (prepare() sets it), so `--set train_cfg.max_epochs=N` is enough.
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=200),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=12, T_max=12, eta_min_ratio=0.01,
         convert_to_iter_based=True),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=True, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='DetVisualizationHook'),
)
log_processor = dict(type='LogProcessor', window_size=20, by_epoch=True)
load_from = None
resume = False
