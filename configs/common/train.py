# The `train` section read by disco_detr.engine.Trainer (every key is used; see TRAIN_KEYS).
train = dict(
    output_dir="./output",
    init_checkpoint="",  # a detectron2/torchvision-converted backbone or a DisCo pre-trained model
    max_iter=90000,  # iterations; None = computed from `epochs` and the loaded training set's size
    epochs=None,  # passes over the training set, used when max_iter is None (the schedule follows the dataset)
    device="auto",  # "auto" = CUDA when available, else CPU; override with train.device=cpu
    seed=0,  # data order, augmentation and dropout are functions of (seed, iteration)
    amp=dict(enabled=True),  # mixed precision on CUDA; ignored (logged) on CPU
    # torch.compile of the model's forward (fine-tuning and pre-training); a variant that fails to compile is logged
    # and runs eagerly. backend: torch.compile's ("inductor"; "aot_eager" needs no C++/Triton), mode: its mode or None
    compile=dict(enabled=False, backend="inductor", mode=None),
    # multi-scale deformable attention: "auto" = Triton kernel on CUDA when triton imports, else PyTorch; or force one
    ms_deform_attn_backend="auto",
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    clip_grad_norm=0.1,  # max L2 norm of all gradients; 0 disables clipping
    # a NaN / inf summed loss: "raise" = detectron2's FloatingPointError (stops the run); "skip" = every process skips
    # that step (no backward, no optimizer step; logged with its loss terms and image ids; metrics.json counts
    # nonfinite_skipped) and the run saves a checkpoint and stops after nonfinite_max_consecutive skips in a row
    nonfinite="raise",
    nonfinite_max_consecutive=10,
    # recompute activations in backward instead of keeping them (less memory, more step time; docs/gpu.md): any of
    # "backbone" (each residual block), "encoder" (each encoder layer), "decoder" (each decoder layer); () = off
    activation_checkpointing=(),
    checkpointer=dict(period=5000, max_to_keep=100),
    eval_period=5000,  # 0 = evaluate only at the end
    log_period=20,
    checkpoint_allow_pickle=False,  # True only for trusted checkpoints that hold Python objects
    transfer_mismatch="error",  # pre-trained tensor of another shape (e.g. query count): "error" or "fresh"
    # pre-training: refuse to start unless init_checkpoint holds every weight of the frozen backbone
    require_backbone_weights=False,
    # EMA of the weights (engine/ema.py): evaluation and the final checkpoint use it; decay * (1 - exp(-t / warmups))
    ema=dict(enabled=False, decay=0.9999, warmups=2000),
    # The paper's analysis, recorded while training (disco_detr/analysis/hooks.py; all off by default):
    analysis=dict(
        reference_period=0,  # K > 0: every query's reference point every K iterations + first + last
        probe_images=8,  # images recorded when references depend on the image (DINO, RT-DETR)
        probe_size=(800, 1333),  # (short side, max long side) of the probe images
        query_distance=False,  # at every evaluation: matched query reference -> object centre distance
    ),
)
