"""Code the examples share: config checks, data, the workdir, the command line."""
