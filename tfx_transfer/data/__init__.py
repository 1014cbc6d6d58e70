"""Data: decoding any image format (`images`), readers of folders, CSV files and official layouts
(`sources`), grouped stratified splits (`splits`), built-in data (`embedded`, `synthetic_signs`,
`synthetic_xray`), augmentation in tf.data (`augment`) and the tf.data pipeline (`pipeline`).
"""
