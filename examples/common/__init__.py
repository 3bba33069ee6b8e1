"""Code the examples share.

``workdir``: the command line, the run's workdir (lock, records, checkpoints,
TensorBoard, curves, stop signals) and the config checks; ``input_pipeline``:
the data; ``image_grid``: pictures of images.
"""
