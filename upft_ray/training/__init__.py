"""Stage 2: UPFT prefix SFT with Ray Train (TorchTrainer) workers running DeepSpeed ZeRO."""
