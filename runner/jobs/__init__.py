"""One job's life, one module a step: its spec (:mod:`~runner.jobs.spec`, the only reader
of its config after the checks), its plan (:mod:`~runner.jobs.plan`), its training
(:mod:`~runner.jobs.execute`), its record (:mod:`~runner.jobs.record`), every way it ends
(:mod:`~runner.jobs.outcome`) and what a process keeps between jobs
(:mod:`~runner.jobs.state`)."""
