"""``python -m runner.lr_find``: the learning-rate range test (Smith 2017) per configuration.

It takes the runner's overrides; each comma list gives one more configuration
(``activation=sigmoid,tanh,relu``: three). For each, the job's own model, loss, optimizer,
batch size and seed train for a few hundred steps on the training split alone, the rate
growing geometrically; it prints the suggested rate, draws loss against rate
(``lr_find.png``) and records one MLflow run per configuration.

- :mod:`~runner.lr_find.range_test`: the test and the suggestion, on one Keras model;
- :mod:`~runner.lr_find.find`: the jobs tested, drawn and recorded;
- :mod:`~runner.lr_find.cli`: the command line.

It suggests a rate from the training loss; it does not choose one on validation, which
``runner.compare --tune optimizer.learning_rate`` does over a sweep of rates.
"""

# What an lr_find run is, as its ``role`` tag: never one of the jobs runner.compare reads.
ROLE = "lr_find"
FIGURE = "lr_find.png"
