"""Training: devices and precision (`devices`), atomic checkpoints (`checkpoint`), cached pooled
features (`features`), the strategies' training loop (`train`), ensembles (`ensemble`) and the
anomaly strategy's memory bank (`anomaly`).
"""
