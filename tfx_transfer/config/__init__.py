"""Configuration, TensorFlow-free: every recipe setting declared once (`settings`), augmentation
policies as data (`policies`), the backbone registry and its named blocks (`backbones`), recipe
files (`recipe`), and `TrainConfig` with the phases of each strategy (`strategies`).

The bottom layer: it imports nothing else of the package (`paths` says where caches live).
"""
