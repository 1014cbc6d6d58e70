"""Run folders, TensorFlow-free: `RunFolder` names and writes every file of a run folder (atomically),
`ModelInfo` is model.json, the serving contract of a trained model (one reader, one writer).
"""
