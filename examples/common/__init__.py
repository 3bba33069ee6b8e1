"""Code the examples share.

``workdir`` is the one interface a ``train.py`` uses for operations (the
workdir's lock, records, checkpoints, summaries, stop signals, the epoch
loop; ``checkpoints`` and ``summaries`` are its parts); ``cli`` the command
line; ``input_pipeline`` the data; ``loops`` an epoch of training;
``config_checks`` and ``activations`` the config fields.
"""
