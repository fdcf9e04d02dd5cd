"""The model zoo: one folder per model family, each holding its dataloader, its models, and where the data
comes as files, the tool that splits a dataset's original files into learner folders.

A family is found through the ``colearn.models`` entry-point group, which names its ``ModelRegistry``
(``pyproject.toml``); the learner core never imports this package. ``support`` holds what several
families share. Importing a family loads no ML framework: a model imports its framework when it is set up.
"""
