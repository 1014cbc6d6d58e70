"""Models: in-model preprocessing (`layers`), weight resolution and offline ports (`weights`,
`offline_weights`, `torch_checkpoint`), classifiers and trainable block slicing (`classifier`), and
the outputs at named blocks that probes, Grad-CAM and the anomaly strategy read (`taps`).
"""
