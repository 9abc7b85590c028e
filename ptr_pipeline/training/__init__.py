"""Weighted thought-mask fine-tuning under DeepSpeed (PTR phase 2), and the SFT baseline."""

from ptr_pipeline.training.baselines import sft_rows, sft_settings
from ptr_pipeline.training.launch import (
    CODE_VERSION,
    TrainingFailed,
    TrainResult,
    train_in_subprocess,
)
from ptr_pipeline.training.settings import LoraSettings, TrainJob, TrainSettings, deepspeed_config
