"""Evaluation: scikit-learn metrics and operating points (`metrics`), temperature scaling
(`calibration`), both TensorFlow-free; Grad-CAM and anomaly-map explanations (`explain`: the module
imports no TensorFlow, its functions do) and scoring images with a model (`scoring`).

Vocabulary: `y_true, y_score, y_pred`; `*_score` is higher-is-better, `*_loss` lower-is-better.
"""
